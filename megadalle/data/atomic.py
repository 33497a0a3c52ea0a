"""Write files so that a reader sees either the old file or the complete new one, never half of it.

Everything a stage publishes (shards, index.json, reports, tokenizer models) goes through here:
the bytes are written to a hidden temporary name in the same directory, flushed to disk, and
renamed over the final name; a rename within one file system is atomic on POSIX. A writer killed before its rename
leaves its temporary; a later process's first write into that folder removes it, if both ran on one host
(`replacing`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from megadalle.processes import owner_gone, owner_tag

_RANDOM = "[0-9a-f]{8}"
"""The random part of `replacing`'s temporary names: two threads of one process writing one file get two names."""
_WRITER = rf"@([^@]+-\d+(?:\.\d+)?)-{_RANDOM}\.tmp"
"""The end of `replacing`'s temporary names: its writer's `processes.owner_tag` (captured) after the `@`."""


def temp_path(path: str | Path) -> Path:
    """Hidden sibling `.name.tmp`: same directory (so the rename is atomic) and skipped by `*.tar` globs."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def named(path: str | Path, tmp: str | Path | None = None) -> Iterator[None]:
    """An OSError of the block names `path` where it named nothing (a write to an open file) or the hidden temporary
    `tmp`: the file its caller asked for is the one a user knows (disk_errors says a full disk with that name)."""
    try:
        yield
    except OSError as err:
        if err.filename is None or (tmp is not None and os.fspath(err.filename) == os.fspath(tmp)):
            err.filename = os.fspath(path)
        raise


@contextmanager
def _removed_on_failure(tmp: str | Path) -> Iterator[None]:
    """`tmp` goes when the block fails (the disk is full, `path` is a folder): a hidden temporary left behind is
    found by nobody and holds its bytes until someone does."""
    try:
        yield
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Flush `tmp` to disk and rename it to `path`; `tmp` goes if that fails."""
    with named(path, tmp), _removed_on_failure(tmp):
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return Path(path)


def temporaries(names: str) -> str:
    """A regex of the hidden temporaries of the files whose names `names` (a regex) matches: `replacing`'s
    `.NAME@<host>-<pid>.<start>-<hex>.tmp` (`.NAME@<host>-<pid>-<hex>.tmp` before it named the writer's start,
    `.NAME.<pid>-<hex>.tmp` before it named the host) and `temp_path`'s `.NAME.tmp`."""
    return rf"\.(?:{names})(?:\.\d+-{_RANDOM}\.tmp|{_WRITER}|\.tmp)"


_SWEPT: set[str] = set()
"""The folders whose dead writers' temporaries this process has removed (`_remove_dead_writers`)."""


def _remove_dead_writers(folder: Path) -> None:
    """Remove the temporaries of `replacing` in `folder` whose writer, a process of this host, has ended: killed
    between its write and its rename, it left a file as large as the one it wrote (a tokenizer model, a grid) that
    nothing else would ever find. A live writer's stays, and so does one whose writer cannot be judged from here:
    another host's on shared storage (processes.owner_gone), or one named before the names held the host. Once per
    folder and process: listing a folder of 10,000 shards for each shard's offsets would cost more than the writes."""
    key = os.path.abspath(folder)
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    left = re.compile(rf"\..+{_WRITER}")
    with contextlib.suppress(OSError):  # a clean-up: a folder this process may write but not list is written all the same
        with os.scandir(folder) as entries:
            stale = [entry.path for entry in entries if (match := left.fullmatch(entry.name)) and owner_gone(match[1])]
        for path in stale:
            with contextlib.suppress(OSError):  # removed by another process meanwhile, or not ours to remove
                os.unlink(path)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name for the block to write `path` under, published when the block ends, gone if it fails. The
    temporary name is this writer's own: processes that publish the same file at once (the ranks of a split `encode`
    each writing the finished index) each rename a whole file, and the last wins; with one shared temporary name one
    renamed it from under another, which then failed. It names the writer's host, pid and start
    (processes.owner_tag) after an `@`, which no host name holds (a host name may hold dots and dashes, and one may
    end in another's: after a dot, `gpu1.vm`'s tag read as `vm`'s), so that a later write removes it if a kill left
    it (`_remove_dead_writers`), and a node sharing the folder does not take a live writer elsewhere for a dead one
    here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers(path.parent)
    tmp = path.with_name(f".{path.name}@{owner_tag()}-{uuid.uuid4().hex[:8]}.tmp")
    with named(path, tmp), _removed_on_failure(tmp):  # a full disk fails the write itself, before `publish`
        yield tmp
    publish(tmp, path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """`data` as `path` (`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """`obj` as UTF-8 JSON. A string holding a lone surrogate (a file name that is not UTF-8, as Python decodes it)
    is written as its JSON escape, which reads back as the same string, instead of failing to encode."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return write_bytes(path, text.encode("utf-8", "backslashreplace"))
