"""The output folder of a verb that writes files at its end (generate, evaluate), made ready at its start.

Sampling 512 images of a 12B model takes hours; an `output=` that names a file, or a folder that cannot be
made, used to fail only when the first image was written. The folder is made, and checked to take a file,
before any model is read; so is whether it already holds an earlier run's results, which a plain rerun
(the default `output` is one folder under out_dir) replaced without a word.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from megadalle.config import ConfigError


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


def refuse_earlier_results(path: str | Path, record: str, verb: str, overwrite: bool, key: str = "output") -> None:
    """Refuse a folder that holds `record` (the file `verb` writes last: its results) unless `overwrite`."""
    if not overwrite and (Path(path) / record).is_file():
        raise OutputError(f"{key}={path}: holds an earlier {verb}'s results ({record}); give another {key}, or "
                          f"overwrite=true to replace them")
