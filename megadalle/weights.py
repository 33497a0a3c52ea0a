"""Weights for users: a safetensors file plus a JSON of the config that built the model.

The pair is self-describing (the JSON names the model kind and carries its config), loads
without pickle, and is what `generate`, `encode` and other users read; training checkpoints
(DeepSpeed's format) stay inside run directories.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def config_path(weights: str | Path) -> Path:
    """`model.safetensors` -> `model.json`."""
    return Path(weights).with_suffix(".json")


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], kind: str, config: Any) -> Path:
    """Write `path` (.safetensors) and its config JSON atomically; `config` is a dataclass or dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    tmp_weights, tmp_json = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".json.tmp")
    save_file(tensors, str(tmp_weights), metadata={"kind": kind})
    tmp_json.write_text(json.dumps({"kind": kind, "config": cfg}, indent=2))
    os.replace(tmp_json, config_path(path))
    os.replace(tmp_weights, path)
    return path


def load_weights(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file and its config; `kind` (e.g. "dvae") is checked when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    meta_path = config_path(path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"weights {path} have no config JSON beside them (expected {meta_path})")
    meta = json.loads(meta_path.read_text())
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    return load_file(str(path)), meta["config"]
