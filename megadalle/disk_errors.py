"""The one line for a file the disk did not take, outside a training run: the words train uses for its own files
(train/disk_full.py), then what the rerun does for the verb at hand."""
from __future__ import annotations

import os
from pathlib import Path

from megadalle.train.disk_full import REMEDIES


def cannot_write(path: str | Path, err: OSError, then: str = "rerun the same command") -> str:
    """`err`, raised writing `path`, in one line: the cause, its remedy (REMEDIES, for a full disk, a quota, a
    read-only file system or `ulimit -f`), then `then`."""
    cause = os.strerror(err.errno) if err.errno else str(err)
    return f"cannot write {path} ({cause}): {REMEDIES.get(err.errno, 'see to its disk')}, then {then}"
