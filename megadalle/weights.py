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
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
SINGLE = "model.safetensors"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


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


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating tensors in the export dtype; integer and boolean ones keep theirs."""
    tensor = tensor.detach().to("cpu")
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()


class ShardedWriter:
    """Writes tensors as they come into size-limited shards of a folder; `close` adds the index and config.

    Only the shard being filled is held (at most `max_shard_bytes` plus one tensor). The folder is
    written under a temporary name and renamed at the end, so an interrupted export leaves no
    folder that looks finished.
    """

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.bfloat16, max_shard_bytes: int = 5 << 30):
        self.folder = Path(folder)
        self.tmp = self.folder.with_name(f"{self.folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.dtype, self.max_shard_bytes = dtype, max_shard_bytes
        self.shard: dict[str, torch.Tensor] = {}
        self.shard_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        tensor = cast(tensor, self.dtype)
        size = tensor.numel() * tensor.element_size()
        if self.shard and self.shard_bytes + size > self.max_shard_bytes:
            self._flush()
        self.shard[name] = tensor
        self.shard_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        save_file(self.shard, str(self.tmp / f"shard-{len(self.shards):05d}.safetensors"), metadata={"format": "pt"})
        self.shards.append(list(self.shard))
        self.shard, self.shard_bytes = {}, 0

    def close(self, kind: str, config: Any) -> Path:
        """Name the shards `model-0000k-of-0000N.safetensors`, write the index and config.json; return the folder."""
        if self.shard or not self.shards:
            self._flush()
        count, weight_map = len(self.shards), {}
        for i, names in enumerate(self.shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.replace(self.tmp / f"shard-{i:05d}.safetensors", self.tmp / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes, "kind": kind}, "weight_map": weight_map}
        (self.tmp / INDEX).write_text(json.dumps(index, indent=1))
        (self.tmp / CONFIG).write_text(config_record(kind, config))
        if self.folder.exists():
            if not (self.folder / INDEX).is_file():
                shutil.rmtree(self.tmp)
                raise FileExistsError(f"{self.folder} exists and is not an exported weights folder; not replacing it")
            shutil.rmtree(self.folder)
        os.replace(self.tmp, self.folder)
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files behind `path`: a .safetensors file, an index JSON, or a folder holding either."""
    path = Path(path)
    if path.is_dir():
        for name in (INDEX, SINGLE):
            if (path / name).is_file():
                return weight_files(path / name)
        raise FileNotFoundError(f"{path} holds neither {INDEX} nor {SINGLE}")
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.name.endswith(".json"):
        weight_map = json.loads(path.read_text())["weight_map"]
        return [path.parent / name for name in dict.fromkeys(weight_map.values())]
    return [path]


def load_weights(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights (a .safetensors file, an index JSON, or a folder holding either) and their config;
    `kind` (e.g. "dvae") is checked when given."""
    files = weight_files(path)
    meta_path = config_path(path if Path(path).is_dir() or str(path).endswith(".json") else files[0])
    if Path(path).is_dir() and files[0].name == SINGLE and not meta_path.is_file():
        meta_path = config_path(files[0])
    if not meta_path.is_file():
        raise FileNotFoundError(f"weights {path} have no config JSON (expected {meta_path})")
    meta = json.loads(meta_path.read_text())
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state, meta["config"]
