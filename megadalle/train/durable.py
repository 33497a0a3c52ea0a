"""Files that outlive a power loss, not only a crash: the fsyncs a checkpoint needs beyond atomic.py's rename.

atomic.write_bytes lets a reader see the old file or the new one, never half; but until the directory that holds
the rename is fsynced, a power loss can undo the rename or leave the renamed file empty. And DeepSpeed closes the
files of a checkpoint without fsyncing them, so a power loss can leave them at their full size and zeroed. A
checkpoint's manifest and `latest` (checkpoint_save.py) must never name files in either state.
"""
from __future__ import annotations

import os
from pathlib import Path

from megadalle.data import atomic


def atomic_write(path: Path, text: str) -> None:
    """`text` as `path`, the old text or the new after a power loss too: atomic.write_bytes fsyncs its temporary
    and renames it (and removes it when the write fails: a full disk leaves no `.latest@*.tmp`), then the
    directory is fsynced (without the fsyncs a crash can leave the renamed file empty)."""
    atomic.write_bytes(path, text.encode())
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: Path) -> None:
    """fsync every file under `path`, then the directories. DeepSpeed closes its files without: until then a
    power loss can leave them at their full size and zeroed, which the manifest's sizes cannot tell. Rank 0
    alone does it, once every rank's writes are closed: a checkpoint has ~2 files per rank, and every rank
    fsyncing every file was W^2 calls on shared storage (its clients flush a file's writes at close)."""
    for item in sorted(path.rglob("*"), key=lambda p: p.is_dir()):
        if item.is_file():
            with open(item, "rb") as f:
                os.fsync(f.fileno())
        elif item.is_dir():
            fsync_dir(item)
    fsync_dir(path)
