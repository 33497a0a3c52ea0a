"""`open_index`, what the readers call: a folder of tars written elsewhere is indexed on first use.

It is indexed (with a message) when it has no index.json, and again whenever its tars differ from those
the index records (`coverage.py`: img2dataset added some since; only the new and changed tars are read again,
`reuse.py`), under a file lock so that ranks starting together index it once. A current index is read without writing anything, so a read-only folder
(a shared data set) needs only to be indexed once where it is writable; one that needs indexing is
refused with the command that does it (`ReadOnlyShards`).
"""
from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from megadalle.config.override import command_line
from megadalle.data.coverage import changes
from megadalle.data.index import INDEX_NAME, ShardIndex, ShardsNotFound
from megadalle.data.ingest.folder import index_directory, read_only, refuse_unfinished
from megadalle.data.reuse import ADDED_OPTIONS

DEFAULT_REQUIRE = ("txt",)


@contextmanager
def _locked(root: Path) -> Iterator[bool]:
    """An exclusive lock on <root>/.index.lock: processes indexing the same directory take turns. Yields whether
    this process may write into `root`.

    A directory this process cannot write to (a read-only mount) gets no lock: indexing writes beside
    the tars, so no process can be indexing it, and there is nothing to wait for."""
    try:
        lock = open(root / ".index.lock", "a")
    except OSError:
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield os.access(root, os.W_OK)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_index(root: str | Path, key: str | None = None, stopped: Callable[[], bool] = lambda: False) -> ShardIndex:
    """The directory's index; tars written elsewhere with no index.json, or changed since it was written, are
    indexed first, with a message. `key` (e.g. "data.shards") names the setting in the error when there is
    nothing to read. `stopped()` true (a training verb's stop signal) ends indexing with IndexingStopped."""
    try:
        return _open_index(Path(root), stopped)
    except ShardsNotFound as err:
        if key is None:
            raise
        raise type(err)(f"{key}={str(root)!r}: {err}") from None


def _open_index(root: Path, stopped: Callable[[], bool]) -> ShardIndex:
    """A current index is returned without writing anything (a read-only folder needs nothing more)."""
    if not root.is_dir():
        return ShardIndex.load(root)  # the usual error
    index = _covering(root)
    if index is not None:
        return index
    if not (root / INDEX_NAME).is_file() and not any(root.glob("*.tar")):
        return ShardIndex.load(root)  # nothing to index: the usual error
    # Offset files without index.json are an unfinished megadalle output, an interrupted indexing or
    # another process indexing right now (it writes them first): only under the lock can they be told apart.
    with _locked(root) as writable:
        if _covering(root) is None:  # else another process indexed it while this one waited
            _index_now(root, writable, stopped)
    return ShardIndex.load(root)


def _covering(root: Path) -> ShardIndex | None:
    """The folder's index when it has one that covers its tars as they are now."""
    if not (root / INDEX_NAME).is_file():
        return None
    index = ShardIndex.load(root)
    return None if changes(index) else index


def _index_now(root: Path, writable: bool, stopped: Callable[[], bool]) -> None:
    """Index `root` (under the lock), which has no index.json or one its tars no longer match, with the options
    of the earlier indexing (defaults if none)."""
    old = ShardIndex.load(root) if (root / INDEX_NAME).is_file() else None
    if old is None:
        tars = sorted(root.glob("*.tar"))
        refuse_unfinished(root, tars)
        why = f"{len(tars)} tar shards without {INDEX_NAME}"
    else:
        why = f"tar shards changed since {INDEX_NAME} was written ({changes(old)})"
    if not writable:
        raise read_only(root, f"{why}; the folder is read-only")

    def announce(reading: int, tars: int) -> None:
        unchanged = f" ({tars - reading} unchanged since)" if reading < tars else ""
        print(f"[index] {root}: {why}; indexing them now, reading {reading} of {tars} tars{unchanged} and checking "
              f"every sample (`{command_line('index', dir=root)}` does the same ahead of time)", file=sys.stderr,
              flush=True)

    options = (old.indexing if old else None) or {}
    summary = index_directory(root, options.get("require", DEFAULT_REQUIRE), options.get("require_media", True),
                              num_workers=None, progress=True, decode=options.get("decode", True), announce=announce,
                              stopped=stopped, min_side=options.get("min_side", ADDED_OPTIONS["min_side"]))
    print(summary.text(), file=sys.stderr, flush=True)
