"""Whether a checkpoint directory is complete: the one test resume, prune and export apply before they trust it.

A checkpoint counts only when its manifest exists and every listed file has its recorded size and readable
ends (`unreadable`), so a run killed mid-save, or a power loss that zeroed a file, leaves a directory that
resume skips. The test reads sizes and the ends of files, cheap at any size; damage inside a file is for the
readers that check each zip record's CRC-32 (zip_crc.py).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from megadalle.train.checkpoint import MANIFEST, step_dirs

LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
"""The first bytes of torch's pre-zip format (pickle of its magic number), which DeepSpeed writes when
`checkpoint.checkpoint_serialization: false`."""


def legacy_torch_file(file: Path) -> bool:
    with open(file, "rb") as f:
        return f.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC


def unreadable(file: Path) -> str | None:
    """Why `file` cannot be what its name says, judged from its ends alone (cheap at any size): a torch `.pt`
    without its zip directory (at the end), a `.safetensors` without its JSON header (at the start).
    This catches the zeroed files a power loss leaves. Damage in the middle is for the readers that check each
    zip record's CRC-32 (export, generate, `load_run`: zip_crc.py), not for resume (see checkpoint_load.load)."""
    if file.suffix == ".pt" and not zipfile.is_zipfile(file) and not legacy_torch_file(file):
        return f"{file} is not a readable torch file (zeroed or overwritten)"
    if file.suffix == ".safetensors":
        with open(file, "rb") as f:
            header = int.from_bytes(f.read(8), "little")
            if not 0 < header <= file.stat().st_size - 8 or f.read(1) != b"{":
                return f"{file} is not a readable safetensors file (zeroed or overwritten)"
    return None


def damage(path: Path) -> str | None:
    """Why the checkpoint directory `path` cannot be used, or None when it is complete."""
    if not path.is_dir():
        return f"{path} does not exist"
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{path} has no {MANIFEST} (the save did not finish)"
    try:
        files = dict(json.loads(manifest.read_text())["files"])
    except (ValueError, KeyError, TypeError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != size:
            return f"{file} has {file.stat().st_size} bytes, the manifest says {size}"
        why = unreadable(file)
        if why is not None:
            return why
    return None


def complete_tags(root: Path, before: str | None = None) -> list[str]:
    """Complete checkpoint tags under `root`, oldest first; with `before`, only those older than that tag."""
    return [p.name for p in step_dirs(root) if (before is None or p.name < before) and damage(p) is None]
