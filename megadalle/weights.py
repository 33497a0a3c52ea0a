"""Weights for users: safetensors plus a JSON of the config that built the model, in two forms.

- one file: `model.safetensors` with `model.json` beside it (small models: the dVAE, CLIP, the demo);
- a folder, the layout Hugging Face tools read: `model-00001-of-0000N.safetensors` shards cut by
  size, `model.safetensors.index.json` whose `weight_map` names each tensor's shard, and
  `config.json`. A 12B model is 24 GB in bf16: shards keep every file, and the memory of whoever
  writes or reads one, a few GB.

Both are self-describing (the JSON names the model kind and carries its config) and load without
pickle; `load_weights` reads either. Training checkpoints (DeepSpeed's format) stay in run directories.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from megadalle.errors import UserError
from megadalle.planned_safetensors import Layout, PlannedFile, nbytes
from megadalle.processes import owner_gone, owner_tag

INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
SINGLE = "model.safetensors"
TMP = ".tmp-"
"""Temporaries are `<target>.tmp-<host>-<pid>` (processes.owner_tag): a later export can tell a dead writer's."""
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


class WeightsError(UserError, ValueError):
    """Weights of another kind of model than the one asked for."""


class WeightsNotFound(UserError, FileNotFoundError):
    """No weights, or no config JSON beside them, where a path points."""


class OutputInTheWay(UserError, FileExistsError):
    """Something other than an earlier export where an export would write."""


class AmbiguousOutput(UserError, ValueError):
    """An export `output` that names a file and a folder at once."""


class WeightsDamaged(UserError, ValueError):
    """A weights file, or a JSON an export wrote beside it, that does not read as written: cut short, garbled, or
    a shard its index lists gone (a copy that stopped early, a disk that filled)."""


def damaged(path: str | Path, why: str) -> WeightsDamaged:
    """The one line for a damaged `path`: what is wrong, and the two ways to get it whole again."""
    return WeightsDamaged(f"{path}: {why}; re-export the weights, or copy this file again from where it came")


def read_record(path: Path, *keys: str) -> dict:
    """A JSON record an export wrote (an index, a config JSON, a model folder's bundle.json), holding `keys`: a
    garbled one is `damaged`, named, rather than a JSONDecodeError or KeyError deep in a load."""
    try:
        record = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for a binary file
        raise damaged(path, f"not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise damaged(path, f"a JSON {type(record).__name__}, not the object an export writes")
    missing = [key for key in keys if key not in record]
    if missing:
        raise damaged(path, f"lacks {', '.join(missing)}")
    return record


def json_object(path: Path) -> dict | None:
    """The JSON object in the file `path`; None for anything else (no JSON, a list, a binary file)."""
    try:
        return read_record(path)
    except WeightsDamaged:
        return None


def recorded_kind(path: Path) -> str | None:
    """The model kind the safetensors metadata of `path` records (an export writes it), read from the header
    alone; None for a file that is no safetensors, or that records none (another tool's)."""
    try:
        with safe_open(str(path), framework="pt") as tensors:
            kind = (tensors.metadata() or {}).get("kind")
    except (SafetensorError, OSError):
        return None
    return kind


def one_file(output: str | Path) -> bool:
    """Whether an export writes `output` as one .safetensors file (else a folder). `x.safetensors/` says both, a
    file by its suffix and a folder by its slash (which Path drops): refused rather than guessed."""
    text = str(output)
    named_file = text.rstrip("/" + os.sep).endswith(".safetensors")
    if named_file and text.endswith(("/", os.sep)):
        raise AmbiguousOutput(f"output={text}: ends in .safetensors (one file) and in / (a folder); drop the / "
                              "to write one file, or name the folder otherwise")
    return named_file


def _weights_folder(folder: Path) -> bool:
    return (folder / INDEX).is_file()


def _file_in_the_way(target: Path, kind: str | None) -> tuple[str, Path] | None:
    """Why one .safetensors file of a `kind` model (None: of any kind) may not be written at `target`, with its
    config JSON beside, and what is in the way; None where it may: nothing is there, or a model of that kind."""
    if target.is_dir():
        return "a folder, where the export writes one .safetensors file", target
    found = recorded_kind(target) if target.exists() else None
    if target.exists() and found is None:
        return ("exists and is no weights file an export wrote (no safetensors recording a model kind), so the "
                "export will not replace it"), target
    if target.exists() and kind is not None and found != kind:
        return (f"holds the weights of a {found!r} model, and this export writes a {kind!r} one, so it will not "
                "replace them"), target
    config, wanted = config_path(target), found or kind
    if not config.exists():
        return None
    record = json_object(config) or {}
    if "config" in record and (record.get("kind") == wanted if wanted else isinstance(record.get("kind"), str)):
        return None
    what = "a config JSON an export wrote" if wanted is None else f"the config JSON of a {wanted!r} model"
    return f"{config} is there and is not {what}, and the export writes its config there", config


def check_replaceable(target: str | Path, earlier: Callable[[Path], bool] = _weights_folder,
                      what: str = f"an exported weights folder (no {INDEX})", kind: str | None = None) -> None:
    """An export replaces what an earlier export wrote at `target` (its `output`) and nothing else: a folder of
    other files (a model folder, a run, image shards) is never deleted nor written into, and a folder is no place
    for one file. A folder is an earlier export when `earlier` says so (`what` names one); an empty one is
    taken. One file replaces only the weights of a `kind` model (None: of any kind, where the kind is not known
    yet), and its config JSON (`x.json` beside `x.safetensors`) only that model's: a user's `x.json`, the dVAE
    where the Transformer goes, are not overwritten. Checked before the first tensor is read (a 12B streams for
    minutes), and again when the export is put in place."""
    single = one_file(target)
    target = Path(target)
    if single:
        problem = _file_in_the_way(target, kind)
    else:
        taken = target.is_dir() and (earlier(target) or not any(target.iterdir()))
        problem = (None if not target.exists() or taken else
                   (f"exists and is neither empty nor {what}, so the export will not replace it", target))
    if problem:
        why, obstacle = problem
        raise OutputInTheWay(f"output={target}: {why}; give another path, or remove "
                             f"{'it' if obstacle == target else obstacle}")


def shard_of(path: str | Path) -> Path | None:
    """The weights folder whose index lists the file `path` as one of its shards; None for anything else. A
    shard alone is no model (its config and the other shards are the folder's)."""
    path = Path(path)
    index = path.parent / INDEX
    if not path.is_file() or not index.is_file():
        return None
    try:
        return path.parent if path.name in json.loads(index.read_text()).get("weight_map", {}).values() else None
    except (ValueError, AttributeError):
        return None


def config_path(weights: str | Path) -> Path:
    """Where the config JSON of `weights` lives: `config.json` of a folder (or of an index's folder),
    `model.json` beside a single `model.safetensors`."""
    weights = Path(weights)
    if weights.is_dir():
        return weights / CONFIG
    if weights.name.endswith(".index.json"):
        return weights.parent / CONFIG
    return weights.with_suffix(".json")


def config_record(kind: str, config: Any) -> str:
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.dumps({"kind": kind, "config": cfg}, indent=2)


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], kind: str, config: Any) -> Path:
    """Write one `path` (.safetensors) and its config JSON atomically; `config` is a dataclass or dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    tmp_weights, tmp_json = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".json.tmp")
    save_file(tensors, str(tmp_weights), metadata={"kind": kind})
    tmp_json.write_text(config_record(kind, config))
    os.replace(tmp_json, config_path(path))
    os.replace(tmp_weights, path)
    return path


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating tensors in `dtype`, where they are; integer and boolean ones keep theirs."""
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor as the export writes it: on the CPU, contiguous, floating ones in the export dtype."""
    return as_dtype(tensor.detach().to("cpu"), dtype).contiguous()


def export_layout(state: dict[str, torch.Tensor], dtype: torch.dtype) -> Layout:
    """Each tensor's shape and its dtype once `cast` (the tensors may be on the meta device)."""
    return {name: (t.shape, dtype if t.is_floating_point() else t.dtype) for name, t in state.items()}


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporaries of `target` that a killed export on this machine left: its process is gone, and
    nothing else would ever remove a file the size of the model (24 GB at 12B). A live export's, or one from
    another machine (whose processes cannot be seen from here), is left alone. (Containers that share a host
    name but not a process namespace, exporting to one target on shared storage, would defeat this.)"""
    prefix = f"{target.name}{TMP}"
    for tmp in target.parent.glob(f"{glob.escape(prefix)}*"):
        if not owner_gone(tmp.name[len(prefix):]):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


class _StreamedWriter:
    """Tensors, as they come and in any order, into safetensors files planned from a `Layout`, under a
    temporary name renamed at `close`: an interrupted export leaves nothing that looks finished.

    Only the tensor being written is held (planned_safetensors.py), whatever the size of the files.
    Each tensor is cast to the dtype its layout planned (`export_layout`).
    """

    def __init__(self, target: Path, layout: Layout, kind: str):
        self.target, self.layout, self.kind = target, layout, kind
        self.tmp = target.with_name(f"{target.name}{TMP}{owner_tag()}")
        self.files: dict[str, PlannedFile] = {}
        remove_stale_temporaries(target)

    def add(self, name: str, tensor: torch.Tensor, first_row: int = 0) -> None:
        """`tensor` as the planned `name`, or as its rows from `first_row` on (PlannedFile.write)."""
        if name not in self.files:
            raise ValueError(f"{name} is not among the {len(self.layout)} tensors planned for {self.target}")
        self.files[name].write(name, cast(tensor, self.layout[name][1]), first_row)

    def _close_files(self) -> None:
        for file in dict.fromkeys(self.files.values()):
            file.close()

    def abort(self) -> None:
        """Remove what was written."""
        for file in dict.fromkeys(self.files.values()):
            file.release()
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


class SingleFileWriter(_StreamedWriter):
    """One `.safetensors` file with its config JSON beside (`model.json` for `model.safetensors`)."""

    def __init__(self, path: str | Path, layout: Layout, kind: str):
        check_replaceable(path, kind=kind)  # the kind is known here: a dVAE's file is no place for a Transformer
        super().__init__(Path(path), layout, kind)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        file = PlannedFile(self.tmp, layout, {"kind": kind})
        self.files = dict.fromkeys(layout, file)

    def close(self, config: Any, before_replace: Callable[[], None] | None = None) -> Path:
        """Write the config JSON, then put both in place (calling `before_replace` first); return the file. What
        came to `path` while the tensors were written is checked again, as at the start."""
        self._close_files()
        try:
            check_replaceable(self.target, kind=self.kind)
        except OutputInTheWay:
            self.abort()
            raise
        tmp_json = self.target.with_name(self.target.name + ".json.tmp")
        tmp_json.write_text(config_record(self.kind, config))
        if before_replace is not None:
            before_replace()
        os.replace(tmp_json, config_path(self.target))
        os.replace(self.tmp, self.target)
        return self.target


class ShardedWriter(_StreamedWriter):
    """A folder of shards cut by size in the layout's order (`model-0000k-of-0000N.safetensors`); `close`
    adds the index and config.json."""

    def __init__(self, folder: str | Path, layout: Layout, kind: str, max_shard_bytes: int = 5 << 30):
        super().__init__(Path(folder), layout, kind)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        shards: list[Layout] = [{}]
        size = 0
        for name, (shape, tensor_dtype) in layout.items():
            tensor_bytes = nbytes(shape, tensor_dtype)
            if shards[-1] and size + tensor_bytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = (shape, tensor_dtype)
            size += tensor_bytes
        self.weight_map = {}
        for i, shard in enumerate(shards):
            filename = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            file = PlannedFile(self.tmp / filename, shard, {"format": "pt"})
            self.files.update(dict.fromkeys(shard, file))
            self.weight_map.update(dict.fromkeys(shard, filename))
        self.total_bytes = sum(nbytes(shape, d) for shape, d in layout.values())

    def close(self, config: Any, before_replace: Callable[[], None] | None = None) -> Path:
        """Write the index and config.json, then put the folder in place; return it. `before_replace` is called
        once the new folder is complete, just before an earlier one is touched (a model folder marks itself
        unfinished then: bundle.py)."""
        self._close_files()
        index = {"metadata": {"total_size": self.total_bytes, "kind": self.kind}, "weight_map": self.weight_map}
        (self.tmp / INDEX).write_text(json.dumps(index, indent=1))
        (self.tmp / CONFIG).write_text(config_record(self.kind, config))
        if self.target.exists():
            try:
                check_replaceable(self.target)
            except OutputInTheWay:
                shutil.rmtree(self.tmp)
                raise
        if before_replace is not None:
            before_replace()
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.tmp, self.target)
        return self.target


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files behind `path`: a .safetensors file, an index JSON, or a folder holding either."""
    path = Path(path)
    if path.is_dir():
        for name in (INDEX, SINGLE):
            if (path / name).is_file():
                return weight_files(path / name)
        raise WeightsNotFound(f"{path} holds neither {INDEX} nor {SINGLE}")
    if not path.is_file():
        raise WeightsNotFound(f"no weights file at {path}")
    if path.name.endswith(".json"):
        weight_map = read_record(path, "weight_map")["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise damaged(path, "its weight_map is no map of tensor names to shard files")
        files = [path.parent / name for name in dict.fromkeys(weight_map.values())]
        for file in files:  # every shard, before any is read: a missing last one is not found minutes in
            if not file.is_file():
                raise damaged(file, f"not there, though {path.name} lists it")
        return files
    return [path]


def _open(file: Path, device: torch.device | str = "cpu"):
    """`safe_open` of `file`, one that is cut short or is no safetensors file `damaged`."""
    try:
        return safe_open(str(file), framework="pt", device=str(device))
    except SafetensorError as err:
        raise damaged(file, f"not a whole safetensors file ({err})") from None


def load_weights(path: str | Path, kind: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights (a .safetensors file, an index JSON, or a folder holding either) and their config;
    `kind` (e.g. "dvae") is checked when given.

    Tensors are read one at a time straight onto `device` and, with `dtype`, cast there (`as_dtype`:
    integer tensors keep theirs), so a bf16 12B read onto a GPU never holds the weights in host memory, nor an fp32
    copy anywhere."""
    files = weight_files(path)
    config = read_config(path, kind, files)
    for file in files:  # each one whole (its header read, its size checked), before the first tensor is read
        with _open(file):
            pass
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with _open(file, device) as tensors:
            for name in tensors.keys():
                tensor = tensors.get_tensor(name)
                state[name] = tensor if dtype is None else as_dtype(tensor, dtype)
    return state, config


def read_config(path: str | Path, kind: str | None = None, files: list[Path] | None = None) -> dict:
    """The config recorded beside weights (a .safetensors file, an index JSON, or a folder holding either),
    without reading a tensor; `kind` is checked when given."""
    files = files or weight_files(path)
    meta_path = config_path(path if Path(path).is_dir() or str(path).endswith(".json") else files[0])
    if Path(path).is_dir() and files[0].name == SINGLE and not meta_path.is_file():
        meta_path = config_path(files[0])
    if not meta_path.is_file():
        folder = shard_of(path)
        if folder is not None:
            raise WeightsNotFound(f"{path} is one shard of the weights in {folder}: give the folder {folder} (or "
                                  f"its {INDEX})")
        raise WeightsNotFound(f"weights {path} have no config JSON (expected {meta_path}); re-export them, or copy "
                              f"{meta_path.name} again from where they came")
    meta = read_record(meta_path, "kind", "config")
    if kind is not None and meta.get("kind") != kind:
        raise WeightsError(f"{path} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    return meta["config"]
