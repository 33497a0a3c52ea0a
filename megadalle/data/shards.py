"""Webdataset tar shards: the atomic writer (readers in `reader.py`, the index in `index.py`, shards written
elsewhere indexed by `ingest/`). The tar members are written by webdataset's own `TarWriter`.

Layout of a shard directory (image shards from `prepare`, token shards from `encode`):

    shard-000000.tar, shard-000001.tar, ...   members `<key>.<field>`, a sample's members adjacent
    shard-000000.tar.idx, ...                 byte offset of each sample (npy int64 [count + 1])
    index.json                                {"shards": [{"name", "count", "bytes"}...], "total", "fields", "meta"}

Each shard and its offsets are written under temporary names and renamed when complete, and
index.json is written last: a crashed or running writer leaves no index, and every shard an
index lists was complete when it appeared. An OSError writing a shard names the shard, not its temporary
(atomic.named), for the verb to say a full disk in one line (disk_errors).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from webdataset import TarWriter

from megadalle.data import atomic
from megadalle.data.fields import encode_field
from megadalle.data.index import INDEX_NAME, ShardIndex, ShardInfo, combine, save_offsets
from megadalle.data.ingest import index_directory, open_index, verify
from megadalle.data.reader import SampleReader, iter_samples, iter_shard

__all__ = ["ShardWriter", "ShardIndex", "ShardInfo", "SampleReader", "iter_samples", "iter_shard",
           "index_directory", "open_index", "verify", "combine", "SHARD_PATTERN"]

SHARD_PATTERN = "shard-%06d.tar"


def _tar_writer(path: Path) -> TarWriter:
    """webdataset's writer, made reproducible (fixed time, no owner) and given only bytes: our `encode_field`
    encodes, as its default encoder would pickle some types. The file is ours, so a crash leaves a temp file."""
    return TarWriter(open(path, "wb"), encoder=False, user="", group="", mtime=0, format="PAX_FORMAT")


class ShardWriter:
    """Write samples into numbered tar shards with count and size limits, then publish index.json.

    Each shard is written under a hidden temporary name and renamed when complete. Opening a writer
    removes the directory's index.json (the directory is incomplete until `close`), and `close`
    deletes shards left by an earlier, larger run before publishing the new index, so rewriting a
    directory is safe. (`prepare` never opens one where `encode`'s records lie: output_guard.py.)
    On an exception inside `with`, the partial shard is deleted and no index is written. One writer per directory:
    ranks writing in parallel each write a subdirectory, then one of them publishes a single index over all with
    `combine`.
    A sample is a dict with `__key__` (no dots) and fields: bytes, str, dict (json) or ndarray (npy).
    """

    def __init__(self, root: str | Path, max_count: int = 10_000, max_bytes: int = 1 << 30,
                 meta: dict[str, Any] | None = None):
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"shard limits must be positive: max_count={max_count}, max_bytes={max_bytes}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / INDEX_NAME).unlink(missing_ok=True)
        self.max_count, self.max_bytes, self.meta = max_count, max_bytes, dict(meta or {})
        self.shards: list[ShardInfo] = []
        self.fields: set[str] = set()
        self._tar: TarWriter | None = None
        self._names = self._next_names()  # (path, temporary) of the shard written next, named once per shard
        self._starts: list[int] = []
        self._count = 0
        self._keys: set[str] = set()

    def write(self, sample: dict[str, Any]) -> None:
        key = sample.get("__key__")
        if not isinstance(key, str) or not key or "." in key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample __key__ must be a non-empty string without dots, got {key!r}")
        members = {f: encode_field(f, v) for f, v in sample.items() if not f.startswith("__")}
        if not members:
            raise ValueError(f"sample {key!r} has no fields")
        size = sum(512 + -(-len(b) // 512) * 512 for b in members.values())
        full = self._tar is not None and (self._count >= self.max_count
                                          or self._tar.tarstream.offset + size > self.max_bytes)
        if full:
            self.finish_shard()
        path, tmp = self._names
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in shard {path.name}")
        self._keys.add(key)
        with atomic.named(path, tmp):
            if self._tar is None:
                self._tar = _tar_writer(tmp)
            self._starts.append(self._tar.tarstream.offset)
            self._tar.write({"__key__": key, **members})
        self.fields.update(members)
        self._count += 1

    def close(self) -> ShardIndex:
        """Finish the last shard, delete stale shards and leftovers, publish index.json."""
        self.finish_shard()
        keep = {s.name for s in self.shards}
        for path in [*self.root.glob("shard-*.tar"), *self.root.glob("shard-*.tar.idx")]:
            if path.name.removesuffix(".idx") not in keep:
                path.unlink()
        for path in self.root.glob(".shard-*.tmp"):
            path.unlink()
        index = ShardIndex(self.root, list(self.shards), sorted(self.fields), self.meta)
        index.save()
        return index

    def abort(self) -> None:
        """Drop the shard being written; the directory stays without an index (unfinished). Closing it may
        fail too (a full disk is often why the writer aborts): that second error would hide the first and keep
        the temporary, so it is ignored and the temporary removed."""
        if self._tar is not None:
            tar, self._tar = self._tar, None
            for close in (tar.close, tar.stream.close):
                with contextlib.suppress(OSError):
                    close()
            Path(tar.stream.name).unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _shard_path(self, number: int) -> Path:
        return self.root / (SHARD_PATTERN % number)

    def finish_shard(self) -> None:
        """Publish the shard being written now (e.g. to mirror the shard boundaries of an input); no-op if empty."""
        if self._tar is None:
            return
        path, tmp = self._names
        end = self._tar.tarstream.offset
        with atomic.named(path, tmp):
            self._tar.close()
            self._tar.stream.close()
        save_offsets(path, self._starts + [end])
        atomic.publish(tmp, path)
        self.shards.append(ShardInfo(path.name, self._count, path.stat().st_size))
        self._tar, self._count, self._keys, self._starts = None, 0, set(), []
        self._names = self._next_names()

    def _next_names(self) -> tuple[Path, Path]:
        path = self._shard_path(len(self.shards))
        return path, atomic.temp_path(path)
