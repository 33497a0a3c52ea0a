"""What makes weights self-describing: the files' names in both forms, and the records beside the tensors (the
config JSON, an index, the kind in the safetensors header) written and read back.

The writers, the loader, the checks of what an export may replace and the model folder's writer and finder
(bundle_write.py, sampling/files.py) all find these files by the same names and read them the same way
(`read_record`: a garbled record is one `damaged` line naming the file).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from megadalle.weights.errors import WeightsDamaged, damaged

INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
SINGLE = "model.safetensors"
MANIFEST = "bundle.json"
"""What makes a folder a model folder (bundle_write.py, which writes it last)."""
SOURCE = "exported_from"
"""The config JSON's record of what an export read (`{"run", "checkpoint", "ema"}`): exports of a run still training
were each of an unknown step, their files alike but for the tensors."""


def model_folder_around(path: str | Path) -> Path | None:
    """The model folder that `path` is or lies in (the nearest holding MANIFEST), absolute; None where there is
    none. Its export alone writes into it: weights put there by hand or by another export would not be the ones its
    manifest describes, and a file removed from it breaks it."""
    path = Path(os.path.abspath(path))
    return next((folder for folder in (path, *path.parents) if (folder / MANIFEST).is_file()), None)


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


def config_path(weights: str | Path) -> Path:
    """Where the config JSON of `weights` lives: `config.json` of a folder (or of an index's folder),
    `model.json` beside a single `model.safetensors`."""
    weights = Path(weights)
    if weights.is_dir():
        return weights / CONFIG
    if weights.name.endswith(".index.json"):
        return weights.parent / CONFIG
    return weights.with_suffix(".json")


def config_record(kind: str, config: Any, record: dict | None = None) -> str:
    """The config JSON of a `kind` model: its `config`, and the keys of `record` beside (a CLIP's tokenizer)."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.dumps({"kind": kind, "config": cfg, **(record or {})}, indent=2)
