"""Reading weights back, either form, from whatever path a user gives: a .safetensors file, an index JSON, or a
folder holding either.

Everything that can be checked without reading a tensor is checked first (the config JSON and the kind it names,
every shard there and whole, each holding the tensors the index gives it, and, for a model, its tensors' names and
shapes), so a wrong or damaged path is one line at once, not an error minutes into a 12B
read; and tensors go one at a time onto their device, never all in host memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open

from megadalle.weights.dtypes import as_dtype
from megadalle.weights.errors import WeightsError, WeightsNotFound, damaged
from megadalle.weights.records import INDEX, SINGLE, SOURCE, config_path, json_object, read_record


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


@dataclass(frozen=True)
class _Layout:
    """The files of the weights at a path, from one read of their index."""

    entry: Path
    """The file that describes them: the index JSON or the .safetensors file (a folder holds either)."""
    weight_map: dict[str, str] | None
    """The index's tensor name -> shard file name; None for one file."""
    files: list[Path]
    """The safetensors files, each there."""


def _entry(path: str | Path) -> Path:
    """The file that describes the weights at `path`: the index JSON or the .safetensors file (a folder holds
    either)."""
    path = Path(path)
    if path.is_dir():
        for name in (INDEX, SINGLE):
            if (path / name).is_file():
                return path / name
        raise WeightsNotFound(f"{path} holds neither {INDEX} nor {SINGLE}")
    if not path.is_file():
        raise WeightsNotFound(f"no weights file at {path}")
    return path


def _weight_map(index: Path) -> dict[str, str]:
    """The index's weight_map, tensor name -> shard file name, checked to be one that names a shard."""
    weight_map = read_record(index, "weight_map")["weight_map"]
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise damaged(index, "its weight_map is no map of tensor names to shard files")
    if not weight_map:
        raise damaged(index, "its weight_map is empty: it names no tensor, nor any shard")
    return weight_map


def _layout(path: str | Path) -> _Layout:
    """The weights at `path` (a .safetensors file, an index JSON, or a folder holding either), their index read
    once."""
    entry = _entry(path)
    if not entry.name.endswith(".json"):
        return _Layout(entry, None, [entry])
    weight_map = _weight_map(entry)
    files = [entry.parent / name for name in dict.fromkeys(weight_map.values())]
    for file in files:  # every shard, before any is read: a missing last one is not found minutes in
        if not file.is_file():
            raise damaged(file, f"not there, though {entry.name} lists it")
    return _Layout(entry, weight_map, files)


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


def _headers(files: list[Path]) -> dict[Path, dict[str, tuple[int, ...]]]:
    """Each file's tensor names and shapes, from its header alone; each file opened whole (its size checked)."""
    headers = {}
    for file in files:
        with _open(file) as tensors:
            headers[file] = {name: tuple(tensors.get_slice(name).get_shape()) for name in tensors.keys()}
    return headers


def _check_index(layout: _Layout, headers: dict[Path, dict[str, tuple[int, ...]]]) -> None:
    """Each shard holds the tensors the index assigns it and no other: a tensor in two shards, in another than
    the index says, or in none was read from whichever came last, or not at all, in silence."""
    entry, weight_map = layout.entry, layout.weight_map
    if weight_map is None:
        return
    for file, shapes in headers.items():
        assigned = {name for name, shard in weight_map.items() if shard == file.name}
        unlisted = [name for name in shapes if name not in assigned]
        lacking = [name for name in weight_map if name in assigned and name not in shapes]
        if unlisted:
            where = (f"which {entry.name} puts in {weight_map[unlisted[0]]}" if unlisted[0] in weight_map else
                     f"which {entry.name} does not list")
            raise damaged(file, f"holds {unlisted[0]}, {where}{_more(unlisted)}")
        if lacking:
            raise damaged(file, f"lacks {lacking[0]}, which {entry.name} puts in it{_more(lacking)}")


def _more(names: list) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def mismatches(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
               where: Callable[[str], str] = lambda name: "") -> list[str]:
    """How tensors `found` (name -> shape) differ from those a model `expected`, reshaped ones first, each a phrase
    (`where(name)` says where a found one lies): what a strict load_state_dict would refuse, said before it runs."""
    wrong = [f"{name} {list(found[name])}{where(name)} where the model has {list(shape)}"
             for name, shape in expected.items() if name in found and tuple(found[name]) != tuple(shape)]
    wrong += [f"{name}{where(name)} not in the model" for name in found if name not in expected]
    return wrong + [f"{name} {list(shape)} missing" for name, shape in expected.items() if name not in found]


def first_of(phrases: list[str], count: int = 3) -> str:
    """The first `count` phrases, and how many more: one line, however many there are."""
    return "; ".join(phrases[:count]) + (f" (and {len(phrases) - count} more)" if len(phrases) > count else "")


def _check_shapes(entry: Path, config: Path, headers: dict[Path, dict[str, tuple[int, ...]]],
                  expected: dict[str, tuple[int, ...]]) -> None:
    """The files hold the tensors, of the shapes, of the model their config JSON builds (`expected`): a config JSON
    copied from other weights or edited, a tensor added or reshaped by another tool, fail here, named, rather
    than as load_state_dict's traceback."""
    shard = {name: file.name for file, shapes in headers.items() for name in shapes}
    found = {name: shape for shapes in headers.values() for name, shape in shapes.items()}
    wrong = mismatches(found, expected, (lambda name: f" in {shard[name]}") if len(headers) > 1 else lambda name: "")
    if wrong:
        raise damaged(entry, f"its tensors do not fit the model that {config} describes: {first_of(wrong)}")


def _check_headers(layout: _Layout, config: Path, expected: dict[str, tuple[int, ...]] | None) -> None:
    """Every check of the files that needs their headers alone: each opened whole, the index's shards holding what
    it assigns them, and with `expected` the model's tensors (`_check_shapes`, `config` naming its JSON)."""
    headers = _headers(layout.files)
    _check_index(layout, headers)
    if expected is not None:
        _check_shapes(layout.entry, config, headers, expected)


def _device_and_dtype(device: torch.device | str,
                      dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype | None]:
    """`device` and `dtype` (None: as stored) checked and named as the verbs name them (megadalle.devices)."""
    from megadalle.devices import pick_device, pick_dtype

    device = pick_device(str(device))
    return device, None if dtype is None else pick_dtype(dtype, device)


def _read_tensors(files: list[Path], device: torch.device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The tensors of `files`, one at a time straight onto `device`, cast there to `dtype` when given."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with _open(file, _device_name(device)) as tensors:
            for name in tensors.keys():
                tensor = tensors.get_tensor(name)
                state[name] = tensor if dtype is None else as_dtype(tensor, dtype)
    return state


def load_weights(path: str | Path, kind: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str | None = None,
                 expected: dict[str, tuple[int, ...]] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights (a .safetensors file, an index JSON, or a folder holding either) and their config;
    `kind` (e.g. "dvae") is checked when given, and `expected` (name -> shape, a model's state dict) when given:
    the files must hold those tensors and no other. `device` and `dtype` (None: as stored) are checked and named
    as the verbs name them (megadalle.devices: cpu:0 or torch.device("cpu", 0) is the CPU, "bf16" is bfloat16).

    Tensors are read one at a time straight onto `device` and, with `dtype`, cast there (`as_dtype`:
    integer tensors keep theirs), so a bf16 12B read onto a GPU never holds the weights in host memory, nor an fp32
    copy anywhere. Every check that needs only the headers comes before the first tensor is read."""
    device, dtype = _device_and_dtype(device, dtype)
    layout = _layout(path)
    config, config_file = _config(path, kind, layout.files)
    _check_headers(layout, config_file, expected)
    return _read_tensors(layout.files, device, dtype), config


def _config_file(path: str | Path, files: list[Path]) -> Path:
    """Where the config JSON of the weights at `path` (made of `files`) is: a folder's config.json, else the one
    beside the file given."""
    meta_path = config_path(path if Path(path).is_dir() or str(path).endswith(".json") else files[0])
    if Path(path).is_dir() and files[0].name == SINGLE and not meta_path.is_file():
        return config_path(files[0])
    return meta_path


def read_source(path: str | Path) -> dict | None:
    """What the weights at `path` were exported from (records.SOURCE), without reading a tensor; None where nothing
    records it (weights exported before the record, saved by a training verb, or written by other tools) or no
    weights are there."""
    try:
        record = json_object(_config_file(path, _layout(path).files))
    except WeightsNotFound:
        return None
    source = (record or {}).get(SOURCE)
    return source if isinstance(source, dict) else None


def exported_checkpoint(path: str | Path) -> str | None:
    """The checkpoint (`step_00000600`) the weights at `path` were exported from (`read_source`), None where unknown."""
    checkpoint = (read_source(path) or {}).get("checkpoint")
    return checkpoint if isinstance(checkpoint, str) else None


def read_config(path: str | Path, kind: str | None = None) -> dict:
    """The config recorded beside weights (a .safetensors file, an index JSON, or a folder holding either),
    without reading a tensor; `kind` is checked when given."""
    return _config(path, kind, _layout(path).files)[0]


def _config(path: str | Path, kind: str | None, files: list[Path]) -> tuple[dict, Path]:
    """`read_config` of the weights at `path`, made of `files`, and the config JSON it was read from."""
    meta_path = _config_file(path, files)
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
    return meta["config"], meta_path


def check_into(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """The model `build` makes of the config beside `path`, on the meta device, checked against the files' headers
    as `load_into` checks it, no tensor read: weights copied elsewhere (a model folder's dVAE and CLIP) are known
    to load without reading them."""
    return _built(path, kind, build)[0]


def load_into(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module], device: torch.device | str = "cpu",
              dtype: torch.dtype | str | None = None) -> torch.nn.Module:
    """The model `build` makes of the config beside `path`, holding the weights there. It is built on the meta
    device first, so weights that do not fit their config (an edited JSON, a tensor another tool added) are one
    damaged line naming the files before any tensor is read, not load_state_dict's traceback after all of them."""
    device, dtype = _device_and_dtype(device, dtype)
    model, layout = _built(path, kind, build)
    model.load_state_dict(_read_tensors(layout.files, device, dtype), strict=True, assign=True)
    return model


def _built(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module]) -> tuple[torch.nn.Module, _Layout]:
    """`check_into`'s model, and the layout of the files it was checked against (their index and config JSON read
    once)."""
    layout = _layout(path)
    config, config_file = _config(path, kind, layout.files)
    with torch.device("meta"):
        model = build(config)
    _check_headers(layout, config_file, {name: tuple(t.shape) for name, t in model.state_dict().items()})
    return model, layout
