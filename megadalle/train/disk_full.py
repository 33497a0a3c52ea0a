"""A run's own files (run.json, metrics.jsonl, media) that the disk does not take: one line, not a traceback.

A full disk, a quota, a file system remounted read-only or a file-size limit (`ulimit -f`) is the user's to fix,
like a checkpoint that cannot be saved (`checkpoint_save.on_every_rank`): the run stops on every rank with a line that
names the file and the cause (exit 2). Rank 0 alone writes these files, so its failure is shared (`stop_every_rank`):
a rank that left alone would leave the others waiting in the next collective until its timeout.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from megadalle import disk_errors
from megadalle.train import distributed

RESUMES = "rerun the same command (it resumes from the newest checkpoint)"


class RunFileError(disk_errors.DiskRefused):
    """A run file the disk did not take; the message names it and the cause. Its own class: a callback's is kept
    for every rank to stop on together (`attempt`, `stop_every_rank`)."""

    unnamed = "a file of the run directory"


@contextmanager
def one_line(path: str | Path | None = None) -> Iterator[None]:
    """Within it, an error the disk caused writing `path` is raised as RunFileError; any other as it was."""
    with disk_errors.refused(path, RESUMES, RunFileError):
        yield


def attempt(write: Callable[[], object], path: str | Path | None = None) -> str | None:
    """Run `write`; None when it went through, its one line when the disk did not take it (`one_line`)."""
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
