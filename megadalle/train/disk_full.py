"""A run's own files (run.json, metrics.jsonl, media) that the disk does not take: one line, not a traceback.

A full disk, a quota, a file system remounted read-only or a file-size limit (`ulimit -f`) is the user's to fix,
like a checkpoint that cannot be saved (`checkpoint_save.on_every_rank`): the run stops on every rank with a line that
names the file and the cause (exit 2). Rank 0 alone writes these files, so its failure is shared (`stop_every_rank`):
a rank that left alone would leave the others waiting in the next collective until its timeout.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from megadalle.errors import UserError
from megadalle.train import distributed

REMEDIES = {
    errno.ENOSPC: "free space on its disk",
    errno.EDQUOT: "free space or raise the quota",
    errno.EROFS: "make its file system writable",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
}
"""The write errors a user fixes, and how."""


class RunFileError(UserError, OSError):
    """A run file the disk did not take; the message names it and the cause."""


def describe(err: OSError, path: str | Path | None = None) -> str | None:
    """One line for `err`, raised writing `path` (the error's own file name when None), when it is one of
    REMEDIES; None for any other error (a bug keeps its traceback)."""
    if isinstance(err, RunFileError):
        return str(err)
    if err.errno not in REMEDIES:
        return None
    where = path or err.filename or "a file of the run directory"
    return (f"cannot write {where} ({os.strerror(err.errno)}): {REMEDIES[err.errno]}, then rerun the same command "
            "(it resumes from the newest checkpoint)")


@contextmanager
def one_line(path: str | Path | None = None) -> Iterator[None]:
    """Within it, an error the disk caused writing `path` is raised as RunFileError; any other as it was."""
    try:
        yield
    except OSError as err:
        if (line := describe(err, path)) is None:
            raise
        raise RunFileError(line) from None


def attempt(write: Callable[[], object], path: str | Path | None = None) -> str | None:
    """Run `write`; None when it went through, its one line when the disk did not take it (`describe`)."""
    try:
        with one_line(path):
            write()
    except RunFileError as err:
        return str(err)
    return None


def stop_every_rank(failure: str | None) -> None:
    """On every rank (a collective): raise RunFileError with the first rank's `failure`, if any rank had one."""
    if (error := distributed.first_error(failure)) is not None:
        raise RunFileError(error)
