"""The output folder of a verb that writes files at its end (generate, evaluate), made ready at its start.

Sampling 512 images of a 12B model takes hours; an `output=` that names a file, or a folder that cannot be
made, used to fail only when the first image was written. The folder is made, and checked to take a file,
before any model is read; so is whether it already holds an earlier run's results, which a plain rerun
(the default `output` is one folder under out_dir) replaced without a word. A run that stops early (Ctrl-C, a
stop signal, a refused prompt) takes away the folders it made and left empty.
"""
from __future__ import annotations

import contextlib
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
    from megadalle.weights.records import model_folder_around

    path = Path(path)
    folder = model_folder_around(path)
    if folder is not None:  # its files were listed by the next export as its own, and bundle.json describes no other
        raise OutputError(f"{key}={path}: inside the model folder {folder}, which only its export writes; give "
                          "another folder")
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


SETTINGS = "settings"
"""The record's key holding what decided its results (resume.sampling_key, and generate's keep): a rerun of the same
settings finds them done."""


def finished_already(path: str | Path, record: str, verb: str, overwrite: bool, settings: dict,
                     key: str = "output", older: dict | None = None) -> bool:
    """Whether `path` holds `record` (the file `verb` writes last: its results) of the same `settings` (or of
    `older`, the same settings as an older version stated them: resume.sampling_key's `earlier`): then said in
    one line, and the run has nothing to do. A stopped sweep is continued by its same command, whose jobs before
    the stopped one find their results here, drawn as this run would draw them again (the samples depend on the
    settings alone), with or without `overwrite`. A record of other settings is refused unless `overwrite`, naming
    what differs (resume.differences); so is one of none (an older record, one not JSON)."""
    from megadalle.sampling.resume import differences

    path = Path(path)
    try:
        found = json.loads((path / record).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        found = None
    there = found.get(SETTINGS) if isinstance(found, dict) else None
    forms = [json.loads(json.dumps(form)) for form in (settings, older) if form is not None]
    if there is not None and there in forms:
        print(f"[{verb}] {key}={path}: done already (same settings); skipped", flush=True)
        return True
    if not overwrite:
        other = f" of other settings ({differences(there, *forms).said})" if isinstance(there, dict) else ""
        raise OutputError(f"{key}={path}: holds an earlier {verb}'s results ({record}){other}; give another {key}, "
                          f"or overwrite=true to replace them")
    return False


@contextmanager
def output_folder(path: str | Path, key: str = "output", verb: str | None = None) -> Iterator[Path]:
    """`ready_output(path)` for the block's run, held by `verb` (folder_lock.output_lock, refused naming the holder)
    when given; if the block raises (Ctrl-C among others), the folders it made go again where they are left empty
    (but for the lock file, taken away while still held: a process that opened it since is refused, and one that
    comes later makes its own), so that no empty folder looks like a run's output."""
    from megadalle.folder_lock import LOCK, output_lock

    path = Path(path)
    made = [folder for folder in (path, *path.absolute().parents) if not folder.exists()]
    ready_output(path, key)
    with output_lock(path, verb) if verb else contextlib.nullcontext():
        try:
            yield path
        except BaseException:
            if made and verb:
                (path / LOCK).unlink(missing_ok=True)
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
    from megadalle.interrupted import by_ctrl_c, how, stop_status

    left = kept or f"no {record} of this run in {path}" + ("" if by_ctrl_c(stop) else "; rerun the same command")
    print(f"megadalle {verb}: {how(stop)}; {left}", file=sys.stderr, flush=True)
    return stop_status(stop)
