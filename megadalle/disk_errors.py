"""The one line for a file the disk did not take: the cause and its remedy, then what the rerun does for the verb at
hand (train's own files, train/disk_full.py; prepare's and encode's output, exported weights)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

REMEDIES = {
    errno.ENOSPC: "free space on its disk",
    errno.EDQUOT: "free space or raise the quota",
    errno.EROFS: "make its file system writable",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
}
"""The write errors a user fixes, and how."""


def cannot_write(path: str | Path, err: OSError, then: str = "rerun the same command") -> str:
    """`err`, raised writing `path`, in one line: the cause, its remedy (REMEDIES, for a full disk, a quota, a
    read-only file system or `ulimit -f`), then `then`."""
    cause = os.strerror(err.errno) if err.errno else str(err)
    return f"cannot write {path} ({cause}): {REMEDIES.get(err.errno, 'see to its disk')}, then {then}"
