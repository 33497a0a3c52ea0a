"""Write files so that a reader sees either the old file or the complete new one, never half of it.

Everything a stage publishes (shards, index.json, reports, tokenizer models) goes through here:
the bytes are written to a hidden temporary name in the same directory, flushed to disk, and
renamed over the final name; a rename within one file system is atomic on POSIX.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name for the block to write `path` under, published when the block ends, gone if it fails. The
    temporary name is this writer's own: processes that publish the same file at once (the ranks of a split `encode`
    each writing the finished index) each rename a whole file, and the last wins; with one shared temporary name one
    renamed it from under another, which then failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
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
