"""The output folder of a verb that writes files at its end (generate, evaluate), made ready at its start.

Sampling 512 images of a 12B model takes hours; an `output=` that names a file, or a folder that cannot be
made, used to fail only when the first image was written. The folder is made, and checked to take a file,
before any model is read; so is whether it already holds an earlier run's results, which a plain rerun
(the default `output` is one folder under out_dir) replaced without a word. A run that stops early (Ctrl-C, a
stop signal, a refused prompt) takes away the folders it made and left empty.
"""
from __future__ import annotations

import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from megadalle.config import ConfigError
from megadalle.data import atomic


class OutputError(ConfigError):
    """An output folder that cannot be made or written; the message names the key and the path."""


def ready_output(path: str | Path, key: str = "output") -> Path:
    """`path` as a folder that exists and takes a new file."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{key}={path}: a file is in the way (give a folder)") from None
    except OSError as err:
        raise OutputError(f"{key}={path}: cannot write there ({err.strerror})") from None
    return path


def write_record(path: str | Path, record: dict) -> Path:
    """`record` as the JSON file `path` a verb writes last, whose presence says its results are finished: whole or
    not at all (temporary and rename), so that a full disk leaves no empty record that passes for results (and makes
    the next run refuse the folder, discarding generate's saved batches). The verb says a full disk in one line
    (disk_errors.refused), with what its rerun does."""
    return atomic.write_bytes(path, json.dumps(record, indent=1).encode())


def refuse_earlier_results(path: str | Path, record: str, verb: str, overwrite: bool, key: str = "output") -> None:
    """Refuse a folder that holds `record` (the file `verb` writes last: its results) unless `overwrite`."""
    if not overwrite and (Path(path) / record).is_file():
        raise OutputError(f"{key}={path}: holds an earlier {verb}'s results ({record}); give another {key}, or "
                          f"overwrite=true to replace them")


@contextmanager
def output_folder(path: str | Path, key: str = "output") -> Iterator[Path]:
    """`ready_output(path)` for the block's run; if the block raises (Ctrl-C among others), the folders it made
    go again where they are left empty, so that no empty folder looks like a run's output."""
    path = Path(path)
    made = [folder for folder in (path, *path.absolute().parents) if not folder.exists()]
    ready_output(path, key)
    try:
        yield path
    except BaseException:
        for folder in made:  # deepest first; the first one holding anything keeps its parents too
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def stopped(verb: str, path: str | Path, record: str, stop: BaseException, kept: str | None = None) -> int:
    """A run that Ctrl-C (KeyboardInterrupt) or a stop signal (sampling.stop.SamplingStopped) ended, as one line:
    that `record` was not written, or what is `kept` for the same command to continue. The exit code: 130 for
    Ctrl-C (128 + SIGINT, what a shell reports for it, as `prepare` says it); STOPPED_EXIT for a signal, which
    the scheduler's scripts rerun (megadalle.sampling.stop says why not TERM's 143)."""
    from megadalle.train.signals import STOPPED_EXIT

    how = "interrupted" if isinstance(stop, KeyboardInterrupt) else str(stop)
    left = kept or f"no {record} of this run in {path}" + ("" if isinstance(stop, KeyboardInterrupt) else
                                                            "; rerun the same command")
    print(f"megadalle {verb}: {how}; {left}", file=sys.stderr, flush=True)
    return 130 if isinstance(stop, KeyboardInterrupt) else STOPPED_EXIT
