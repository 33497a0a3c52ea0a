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

Keys saved before JSON records were stated by content, and before a model folder's Transformer was named as the
folder, are still accepted (`sampling_key(earlier=True)`) where the files did not change: a stopped generate
continues, and a finished one is done, across the upgrade.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from megadalle.config import ConfigError
from megadalle.data.atomic import write_bytes
from megadalle.data.digest import sha256

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


def files_state(paths: dict[str, str | Path | None], output: str | Path, earlier: bool = False) -> dict[str, str]:
    """For each key naming a path: a digest of the names and states (`file_state`) of the files the loader reads for
    it (`read_files`), never the output folder's, which this run writes into. `earlier`: every file by size and
    modification time, as keys saved before the JSON records' contents stated them."""
    out = Path(output).resolve()
    state = {}
    for key, given in paths.items():
        if given is None or not Path(given).exists():
            continue
        path = Path(given).resolve()
        state[key] = files_digest(path if path.is_dir() else path.parent, read_files(path, out), earlier)
    return state


def file_state(file: Path, earlier: bool = False) -> tuple[int, int | str]:
    """What a file is taken to hold, by its kind. A JSON record (run.json, a config JSON, an index, a checkpoint's
    manifest: kilobytes) by its size and sha256: a rerun rewrites such a record with the same bytes (a `train` that
    had finished, rerun by a Slurm requeue or a demo, writes run.json anew), and a key that held its modification time
    refused generate's own results of that run as "the files changed". Anything else (weights, a checkpoint's
    tensors, a tokenizer) by its size and modification time, stat calls only: reading gigabytes at every start
    would take minutes, and those files are written once (a newer checkpoint is another file, an export again a
    new modification time). `earlier`: size and modification time for every file."""
    stat = file.stat()
    if file.suffix == ".json" and not earlier:
        return stat.st_size, sha256(file)
    return stat.st_size, stat.st_mtime_ns


def files_digest(folder: Path, files: list[Path], earlier: bool = False) -> str:
    """A digest of the names (relative to `folder`) and states (`file_state`) of `files`."""
    listed = [(str(f.relative_to(folder)), *file_state(f, earlier)) for f in files]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]


def folder_state(folder: str | Path, earlier: bool = False) -> str:
    """`files_digest` of every file under `folder` (image shards and their index): the same path can come to hold
    other images."""
    folder = Path(folder).resolve()
    return files_digest(folder, sorted(f for f in folder.rglob("*") if f.is_file()), earlier)


def model_named(weights: str | Path) -> Path:
    """The model that `weights` names, in one form for its every spelling that the loader reads as the same
    files: a model folder for its `transformer/` or that one's index (`folder_of_transformer`), a folder of
    shards for its index JSON (the loader reads a folder's index). Resolved first: a link of another name to
    `model/transformer` names the model too."""
    from megadalle.sampling.files import folder_of_transformer
    from megadalle.weights import INDEX

    path = folder_of_transformer(Path(weights).resolve())
    return path.parent if path.name == INDEX else path


def sampling_key(config, files: SamplingFiles, device: torch.device, dtype: torch.dtype,
                 result_keys: tuple[str, ...], earlier: bool = False) -> dict:
    """What decides a sampling verb's samples and their scores: `config` (a GenerateConfig or EvaluateConfig) but its
    `result_keys`, with the device and dtype used and, for each model key, the file in use resolved (the same file
    named ./demo/x or by its absolute path, or left to its default beside the weights, the same model folder named
    by its Transformer: `model_named`, is the same setting) and the state of the files the loader reads there
    (`files_state`). `files` are those the verb found for its keys and reads (sampling.files.sampling_files, found
    once: the key states the very files that are read); no tensor is read. `earlier`: the key as versions before
    this one saved it (`weights` as given, every file by its modification time), which a rerun still accepts."""
    read = {"weights": files.transformer, "dvae_weights": files.dvae, "clip_weights": files.clip,
            "tokenizer": files.tokenizer}
    in_use = {**read, "weights": Path(config.weights) if earlier else model_named(config.weights)}
    return {**{k: v for k, v in asdict(config).items() if k not in result_keys},
            **{k: None if path is None else str(Path(path).resolve()) for k, path in in_use.items()},
            "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "files": files_state(read, config.output, earlier)}


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
        """One more finished batch, written out with the earlier ones before it counts as saved; a stop signal
        waits for both (stop.stops_after), so the count a stopped verb states is the file's."""
        from safetensors.torch import save

        from megadalle.sampling.stop import stops_after

        all_codes, all_scores = [*self.codes, codes.cpu()], self.scores + ([] if scores is None else [scores.cpu()])
        tensors = {"codes": torch.cat(all_codes).contiguous()}
        if all_scores:
            tensors["scores"] = torch.cat(all_scores).float().contiguous()
        data = save(tensors, metadata={"key": json.dumps(self.key, sort_keys=True)})
        with stops_after():
            write_bytes(self.path, data)
            self.codes, self.scores = all_codes, all_scores

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def open_saved(folder: str | Path, key: dict, batch_size: int, overwrite: bool, verb: str = "generate",
               out_key: str = "output", older: dict | None = None) -> SavedBatches:
    """The batches an earlier run of the same settings saved in `folder` (none if there is no such file), saved
    under `key` or under `older`, the same settings as an older version stated them (`sampling_key(earlier=True)`);
    they continue under `key`. A file of other settings is refused, naming what differs, unless `overwrite` (then
    it is discarded); so is one that cannot be read."""
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
    if saved_key not in (key, older):
        if overwrite:
            return _discarded(path, key)
        found = differences(saved_key, key, older)
        rerun = "" if found.files_changed else "rerun that command to finish it, "
        raise ConfigError(f"{out_key}={folder}: holds {len(codes)} samples of an unfinished {verb} with "
                          f"other settings ({found.said}); {rerun}give another {out_key}, or overwrite=true to discard "
                          "them")
    scores = list(tensors["scores"].split(batch_size)) if "scores" in tensors else []
    return SavedBatches(path, key, list(codes.split(batch_size)), scores)


def _discarded(path: Path, key: dict) -> SavedBatches:
    path.unlink()
    return SavedBatches(path, key)


FILE_STATES = ("files", "real_files")
"""The key's entries that state files rather than settings."""


class Differences(NamedTuple):
    names: list[str]
    """The settings that differ ("files" and "real_files" among them when their states do)."""
    said: str
    """Those differences said, for the refusal."""
    files_changed: bool
    """Files changed behind a setting that is the same: rerunning the command that saved the key would be refused
    too, so it is no way out to advise."""


def differences(there: dict, *here: dict | None) -> Differences:
    """How `there` (saved by an earlier run) differs from `here` (this run's, in each form it may have been saved
    in: the nearest counts). The files behind a setting given another value differ as a matter of course: said as
    changed only behind a setting that is the same (`real_images=None there, '/x' here` is the difference, not "the
    files in real_images changed")."""
    def differing(form: dict) -> list[str]:
        return sorted(name for name in set(form) | set(there) if form.get(name) != there.get(name))

    def distance(form: dict) -> tuple[int, int]:
        """How many settings differ, then how many of the files' states: a key of the older form, saved before the
        files behind dvae_weights and clip_weights changed, differs from the newer form in every JSON's state."""
        return len(differing(form)), len(changed_files(there.get("files"), form.get("files")))

    form = min((form for form in here if form is not None), key=distance)
    names = differing(form)
    said = {name: _differs(name, there.get(name), form.get(name), set(names)) for name in names}
    files_changed = any(said.get(name) for name in FILE_STATES)
    return Differences(names, "; ".join(filter(None, said.values())), files_changed)


SHOWN = 60
"""The most characters of a list's or a dict's value said (evaluate's captions: thousands of them); a text, a
path or a number is said whole, since two paths often differ at their end."""


def _shown(value) -> str:
    said = repr(value)
    return said if not isinstance(value, (list, dict)) or len(said) <= SHOWN else f"{said[:SHOWN - 1]}…"


def changed_files(there: dict | None, here: dict | None) -> list[str]:
    """The keys whose files' states (`files_state`) differ between two keys' `files`."""
    there, here = there or {}, here or {}
    return sorted(k for k in set(there) | set(here) if there.get(k) != here.get(k))


def _differs(name: str, there, here, given_otherwise: set[str]) -> str:
    """`name`'s difference said, or nothing where it is only that of files behind a setting in `given_otherwise`."""
    if name == "files":
        changed = ", ".join(k for k in changed_files(there, here) if k not in given_otherwise)
        return changed and f"the files behind {changed} changed since (a newer checkpoint, another export)"
    if name == "real_files":
        return "" if "real_images" in given_otherwise else "the files in real_images changed since"
    return f"{name}={_shown(there)} there, {_shown(here)} here"
