"""A file the disk did not take, said in one line: the file, the cause and its remedy, then what the rerun does for
the verb at hand. Every verb that writes goes through `refused` (train's own files, train/disk_full.py; prepare's
and encode's shards, generate's saved batches and its and evaluate's results, the tokenizer's model, exported
weights), so that a full disk is never a traceback, and any other OSError (a bug) keeps its traceback."""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from megadalle.errors import UserError

REMEDIES = {
    errno.ENOSPC: "free space on its disk",
    errno.EDQUOT: "free space or raise the quota",
    errno.EROFS: "make its file system writable",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
}
"""The write errors a user fixes, and how."""

RERUN = "rerun the same command"


class DiskRefused(UserError, OSError):
    """A file the disk did not take (full, over quota, read-only, past `ulimit -f`); the message is its one line.
    A verb whose callers must tell its files apart raises a subclass (train/disk_full.RunFileError)."""

    unnamed = "a file"
    """What the line calls a file when neither the writer nor the error names it (a write to an open file)."""


def describe(err: OSError, path: str | Path | None = None, then: str = RERUN,
             error: type[DiskRefused] = DiskRefused) -> str | None:
    """`err`, raised writing `path` (else the file the error names, else `error.unnamed`), in one line: the cause, its
    remedy (REMEDIES), then `then`; a DiskRefused's own line (the writer nearest the file said it); None for any
    other error."""
    if isinstance(err, DiskRefused):
        return str(err)
    if err.errno not in REMEDIES:
        return None
    return (f"cannot write {path or err.filename or error.unnamed} ({os.strerror(err.errno)}): {REMEDIES[err.errno]}, "
            f"then {then}")


@contextmanager
def refused(path: str | Path | None = None, then: str = RERUN,
            error: type[DiskRefused] = DiskRefused) -> Iterator[None]:
    """Within it, an OSError of REMEDIES is raised as `error`, with its line (`describe`); any other as it was."""
    try:
        yield
    except OSError as err:
        if isinstance(err, error) or (line := describe(err, path, then, error)) is None:
            raise
        raise error(line) from None
