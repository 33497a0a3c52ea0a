"""The finished batches of an unfinished `generate`, saved as it goes, so that a rerun continues where it stopped.

512 samples of a 12B model take hours, and a stop signal (a preemption, a time limit) or Ctrl-C lost them all:
the codes were kept in memory until the end. Each finished batch's codes (and CLIP scores) are now written to
one file in the output folder (atomically: the file holds whole batches, never half of one), which the verb
removes once its results are written. Batch b draws from its own generator seeded by (seed, b) and does not
depend on the batches before it (megadalle.sampling.loop), so a rerun of the same command draws only the
batches left, exactly as an uninterrupted run draws them, and ends with the same samples. The file records
what decides the samples (`key`); a rerun with other settings is refused rather than mixing two runs' samples.
The settings name the models by path, and a path can come to hold other weights between two runs (a run directory
that trained on and saved a newer checkpoint, a model folder exported again): the key holds the state of the
files behind each path too (`files_state`), so those are refused as well.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from megadalle.config import ConfigError
from megadalle.data.atomic import write_bytes

if TYPE_CHECKING:
    from megadalle.sampling.files import SamplingFiles

UNFINISHED = "unfinished.safetensors"
"""The saved batches of a run that has not written its results yet."""
MODEL_FILES = (".safetensors", ".json", ".pt", ".bin", ".model")
"""The kinds of file a sharded folder's weights and configs come in (not logs, grids or metrics)."""


def read_files(path: Path, output: Path) -> list[Path]:
    """The files the loader reads for the model at `path`: a single file and its config JSON (`config_path`); a
    training run's run.json and the files of the checkpoint the loader chooses (`consolidate.checkpoint_dir`), not
    its other checkpoints, which a run still training saves and prunes; the model files of any other folder (a
    sharded export) but those in `output`; an index's folder likewise. Not the files that merely lie beside: a
    user's progress.json beside model.safetensors, another generate's results inside a model folder changed no
    sample."""
    from megadalle.sampling.load import is_run
    from megadalle.train.consolidate import checkpoint_dir
    from megadalle.weights.records import config_path

    if is_run(path):
        chosen = checkpoint_dir(path)
        return [path / "run.json", *sorted(f for f in chosen.rglob("*") if f.is_file())]
    if path.is_dir() or path.name.endswith(".index.json"):
        folder = path if path.is_dir() else path.parent
        return sorted(f for f in folder.rglob("*") if f.suffix in MODEL_FILES and f.is_file() and output not in f.parents)
    return [f for f in (path, config_path(path)) if f.is_file()]


def files_state(paths: dict[str, str | Path | None], output: str | Path) -> dict[str, str]:
    """For each key naming a path: a digest of the names, sizes and modification times of the files the loader reads
    for it (`read_files`), never the output folder's, which this run writes into. Stat calls only, no read."""
    out = Path(output).resolve()
    state = {}
    for key, given in paths.items():
        if given is None or not Path(given).exists():
            continue
        path = Path(given).resolve()
        state[key] = stat_digest(path if path.is_dir() else path.parent, read_files(path, out))
    return state


def stat_digest(folder: Path, files: list[Path]) -> str:
    """A digest of the names (relative to `folder`), sizes and modification times of `files`: stat calls only, no
    read."""
    listed = [(str(f.relative_to(folder)), (stat := f.stat()).st_size, stat.st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]


def folder_state(folder: str | Path) -> str:
    """`stat_digest` of every file under `folder` (image shards and their index): the same path can come to hold
    other images."""
    folder = Path(folder).resolve()
    return stat_digest(folder, sorted(f for f in folder.rglob("*") if f.is_file()))


def sampling_key(config, files: SamplingFiles, device: torch.device, dtype: torch.dtype,
                 result_keys: tuple[str, ...]) -> dict:
    """What decides a sampling verb's samples and their scores: `config` (a GenerateConfig or EvaluateConfig) but its
    `result_keys`, with the device and dtype used and, for each model key, the file in use resolved (the same file
    named ./demo/x or by its absolute path, or left to its default beside the weights, is the same setting) and the
    state of the files the loader reads there (`files_state`). `files` are those the verb found for its keys and
    reads (sampling.files.sampling_files, found once: the key states the very files that are read); no tensor is
    read."""
    read = {"weights": files.transformer, "dvae_weights": files.dvae, "clip_weights": files.clip,
            "tokenizer": files.tokenizer}
    in_use = {**read, "weights": Path(config.weights)}
    return {**{k: v for k, v in asdict(config).items() if k not in result_keys},
            **{k: None if path is None else str(Path(path).resolve()) for k, path in in_use.items()},
            "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "files": files_state(read, config.output)}


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
        names = sorted(name for name in set(key) | set(saved_key) if key.get(name) != saved_key.get(name))
        differ = "; ".join(_differs(name, saved_key.get(name), key.get(name)) for name in names)
        # Files changed under the same command: that command cannot finish it, so it is no way out to name.
        rerun = "" if names == ["files"] else "rerun that command to finish it, "
        raise ConfigError(f"{out_key}={folder}: holds {len(codes)} samples of an unfinished {verb} with "
                          f"other settings ({differ}); {rerun}give another {out_key}, or overwrite=true to discard "
                          "them")
    scores = list(tensors["scores"].split(batch_size)) if "scores" in tensors else []
    return SavedBatches(path, key, list(codes.split(batch_size)), scores)


def _discarded(path: Path, key: dict) -> SavedBatches:
    path.unlink()
    return SavedBatches(path, key)


def _differs(name: str, there, here) -> str:
    if name != "files":
        return f"{name}={there!r} there, {here!r} here"
    changed = sorted(k for k in set(there or {}) | set(here or {}) if (there or {}).get(k) != (here or {}).get(k))
    return f"the files behind {', '.join(changed)} changed since (a newer checkpoint, another export)"
