"""Reading weights back, either form, from whatever path a user gives: a .safetensors file, an index JSON, or a
folder holding either.

Everything that can be checked without reading a tensor is checked first (the config JSON and the kind it names,
every shard there and whole), so a wrong or damaged path is one line at once, not an error minutes into a 12B
read; and tensors go one at a time onto their device, never all in host memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from megadalle.weights.dtypes import as_dtype
from megadalle.weights.errors import WeightsError, WeightsNotFound, damaged
from megadalle.weights.records import INDEX, SINGLE, config_path, read_record


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


def _open(file: Path, device: str = "cpu"):
    """`safe_open` of `file`, one that is cut short or is no safetensors file `damaged`. Every file is opened on the
    CPU first (its header read whole), so a failure opening it on another device is that device's, said so."""
    try:
        return safe_open(str(file), framework="pt", device=device)
    except SafetensorError as err:
        if device != "cpu":
            from megadalle.devices import DeviceError

            raise DeviceError(f"device={device}: the weights {file} cannot be read onto it ({err})") from None
        raise damaged(file, f"not a whole safetensors file ({err})") from None


def _device_name(device: torch.device) -> str:
    """The device as safetensors names it: it takes cpu, not cpu:0 (nor torch.device("cpu", 0))."""
    return "cpu" if device.type == "cpu" else str(device)


def load_weights(path: str | Path, kind: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights (a .safetensors file, an index JSON, or a folder holding either) and their config;
    `kind` (e.g. "dvae") is checked when given. `device` and `dtype` (None: as stored) are checked and named as
    the verbs name them (megadalle.devices: cpu:0 or torch.device("cpu", 0) is the CPU, "bf16" is bfloat16).

    Tensors are read one at a time straight onto `device` and, with `dtype`, cast there (`as_dtype`:
    integer tensors keep theirs), so a bf16 12B read onto a GPU never holds the weights in host memory, nor an fp32
    copy anywhere."""
    from megadalle.devices import pick_device, pick_dtype

    device = pick_device(str(device))
    dtype = None if dtype is None else pick_dtype(dtype, device)
    files = weight_files(path)
    config = read_config(path, kind, files)
    for file in files:  # each one whole (its header read, its size checked), before the first tensor is read
        with _open(file):
            pass
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with _open(file, _device_name(device)) as tensors:
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
