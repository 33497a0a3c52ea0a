"""The finished batches of an unfinished `generate`, saved as it goes, so that a rerun continues where it stopped.

512 samples of a 12B model take hours, and a stop signal (a preemption, a time limit) or Ctrl-C lost them all:
the codes were kept in memory until the end. Each finished batch's codes (and CLIP scores) are now written to
one file in the output folder (atomically: the file holds whole batches, never half of one), which the verb
removes once its results are written. Batch b draws from its own generator seeded by (seed, b) and does not
depend on the batches before it (megadalle.sampling.loop), so a rerun of the same command draws only the
batches left, exactly as an uninterrupted run draws them, and ends with the same samples. The file records
what decides the samples (`key`); a rerun with other settings is refused rather than mixing two runs' samples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from megadalle.config import ConfigError
from megadalle.data.atomic import write_bytes

UNFINISHED = "unfinished.safetensors"
"""The saved batches of a run that has not written its results yet."""


@dataclass
class SavedBatches:
    path: Path
    key: dict
    """What decides the samples and their scores: the prompt, seed, n, batch_size, sampling settings, files,
    dtype and device."""
    codes: list[torch.Tensor] = field(default_factory=list)
    """Each finished batch's codes [<=batch_size, grid_len], in batch order."""
    scores: list[torch.Tensor] = field(default_factory=list)
    """Each finished batch's CLIP scores (none without a reranker)."""

    @property
    def samples(self) -> int:
        return sum(len(batch) for batch in self.codes)

    def add(self, codes: torch.Tensor, scores: torch.Tensor | None) -> None:
        """One more finished batch, written out with the earlier ones before it counts as saved."""
        from safetensors.torch import save

        all_codes, all_scores = [*self.codes, codes.cpu()], self.scores + ([] if scores is None else [scores.cpu()])
        tensors = {"codes": torch.cat(all_codes).contiguous()}
        if all_scores:
            tensors["scores"] = torch.cat(all_scores).float().contiguous()
        write_bytes(self.path, save(tensors, metadata={"key": json.dumps(self.key, sort_keys=True)}))
        self.codes, self.scores = all_codes, all_scores

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def open_saved(folder: str | Path, key: dict, batch_size: int, overwrite: bool, verb: str = "generate",
               out_key: str = "output") -> SavedBatches:
    """The batches an earlier run of the same settings saved in `folder` (none if there is no such file). A file
    of other settings is refused, naming what differs, unless `overwrite` (then it is discarded); so is one that
    cannot be read."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / UNFINISHED
    if not path.is_file():
        return SavedBatches(path, key)
    try:
        with safe_open(path, "pt") as f:
            saved_key = json.loads((f.metadata() or {})["key"])
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        codes = tensors["codes"]
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        if overwrite:
            return _discarded(path, key)
        raise ConfigError(f"{out_key}={folder}: {UNFINISHED} cannot be read ({err}); remove it, or overwrite=true to "
                          f"start again") from None
    if saved_key != key:
        if overwrite:
            return _discarded(path, key)
        differ = "; ".join(f"{name}={saved_key.get(name)!r} there, {key.get(name)!r} here"
                           for name in sorted(set(key) | set(saved_key)) if key.get(name) != saved_key.get(name))
        raise ConfigError(f"{out_key}={folder}: holds {len(codes)} samples of an unfinished {verb} with "
                          f"other settings ({differ}); rerun that command to finish it, give another {out_key}, or "
                          f"overwrite=true to discard them")
    scores = list(tensors["scores"].split(batch_size)) if "scores" in tensors else []
    return SavedBatches(path, key, list(codes.split(batch_size)), scores)


def _discarded(path: Path, key: dict) -> SavedBatches:
    path.unlink()
    return SavedBatches(path, key)
