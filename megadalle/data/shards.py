"""Webdataset tar shards: an atomic writer, the index of samples per shard, and field-wise readers.

Layout of a shard directory (image shards from `prepare`, token shards from `encode`):

    shard-000000.tar, shard-000001.tar, ...   members `<key>.<field>`, a sample's members adjacent
    index.json                                {"shards": [{"name", "count", "bytes"}...], "total", "fields", "meta"}

Why the index: loaders pick samples by global index (order = f(seed, epoch, index)), which needs
the number of samples in each shard before reading any; it also gives the data set a fingerprint
that a resumed run checks. index.json is written last, so it marks a finished directory: a crashed
or running writer leaves none, and every shard it lists was complete when it was renamed into place.

Readers never unpickle: they return raw bytes of the fields asked for, and `fields.decode_field`
decodes only known, safe extensions.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from megadalle.data import atomic
from megadalle.data.fields import decode_field, encode_field, split_member

INDEX_NAME = "index.json"
SHARD_PATTERN = "shard-%06d.tar"
INDEX_FORMAT = "megadalle-shards/1"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    """File name relative to the shard directory."""
    count: int
    """Samples in the shard."""
    bytes: int


@dataclass
class ShardIndex:
    """The shard list of one directory, with counts; loaded from and saved to index.json."""

    root: Path
    shards: list[ShardInfo]
    fields: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def fingerprint(self) -> str:
        """Hash of shard names, counts and sizes: a resumed run must see the same data set."""
        listing = json.dumps([[s.name, s.count, s.bytes] for s in self.shards])
        return hashlib.sha256(listing.encode()).hexdigest()[:16]

    def paths(self) -> list[Path]:
        return [self.root / s.name for s in self.shards]

    @cached_property
    def starts(self) -> np.ndarray:
        """Global id of each shard's first sample, plus the total at the end."""
        return np.concatenate([[0], np.cumsum([s.count for s in self.shards])]).astype(np.int64)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global sample ids -> (shard number, position inside the shard)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.total):
            raise IndexError(f"sample ids must be in [0, {self.total}); got {ids.min()}..{ids.max()}")
        shard = np.searchsorted(self.starts, ids, side="right") - 1
        return shard, ids - self.starts[shard]

    def to_json(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "total": self.total, "fingerprint": self.fingerprint,
                "fields": self.fields, "meta": self.meta,
                "shards": [{"name": s.name, "count": s.count, "bytes": s.bytes} for s in self.shards]}

    def save(self) -> Path:
        return atomic.write_json(self.root / INDEX_NAME, self.to_json())

    @classmethod
    def load(cls, root: str | Path) -> "ShardIndex":
        root = Path(root)
        path = root / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {root} is not a finished megadalle shard directory (the writer writes "
                f"index.json last); for shards made elsewhere run megadalle.data.shards.write_index({str(root)!r})")
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r}, expected {INDEX_FORMAT!r}")
        shards = [ShardInfo(s["name"], int(s["count"]), int(s["bytes"])) for s in data["shards"]]
        if not shards or sum(s.count for s in shards) == 0:
            raise ValueError(f"{path}: the index lists no samples")
        return cls(root, shards, list(data.get("fields", [])), dict(data.get("meta", {})))


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member header with fixed time and owner, so equal inputs give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Write samples into numbered tar shards with count and size limits, then publish index.json.

    Each shard is written under a hidden temporary name and renamed when complete. Opening a writer
    removes the directory's index.json (the directory is incomplete until `close`), and `close`
    deletes shards left by an earlier, larger run before publishing the new index, so rewriting a
    directory is safe. On an exception inside `with`, the partial shard is deleted and no index is
    written. A sample is a dict with `__key__` (no dots) and fields: bytes, str, dict (json) or ndarray (npy).
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
        self._tar: tarfile.TarFile | None = None
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
        if self._tar is not None and (self._count >= self.max_count or self._tar.fileobj.tell() + size > self.max_bytes):
            self.finish_shard()
        if self._tar is None:
            self._tar = tarfile.open(atomic.temp_path(self._shard_path(len(self.shards))), "w", format=tarfile.PAX_FORMAT)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in shard {self._shard_path(len(self.shards)).name}")
        self._keys.add(key)
        for name in sorted(members):
            self._tar.addfile(_tarinfo(f"{key}.{name}", len(members[name])), io.BytesIO(members[name]))
        self.fields.update(members)
        self._count += 1

    def close(self) -> ShardIndex:
        """Finish the last shard, delete stale shards and leftovers, publish index.json."""
        self.finish_shard()
        keep = {s.name for s in self.shards}
        for path in self.root.glob("shard-*.tar"):
            if path.name not in keep:
                path.unlink()
        for path in self.root.glob(".shard-*.tar.tmp"):
            path.unlink()
        index = ShardIndex(self.root, list(self.shards), sorted(self.fields), self.meta)
        index.save()
        return index

    def abort(self) -> None:
        """Drop the shard being written; the directory stays without an index (unfinished)."""
        if self._tar is not None:
            tmp = Path(self._tar.name)
            self._tar.close()
            self._tar = None
            tmp.unlink(missing_ok=True)

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
        path = self._shard_path(len(self.shards))
        self._tar.close()
        atomic.publish(atomic.temp_path(path), path)
        self.shards.append(ShardInfo(path.name, self._count, path.stat().st_size))
        self._tar, self._count, self._keys = None, 0, set()


def scan_shard(path: str | Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Per sample in tar order: (key, {field: (data offset, size)}). Reads headers only."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, name = split_member(info.name)
            if not name:
                continue
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            samples[-1][1][name] = (info.offset_data, info.size)
    return samples


def iter_shard(path: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order, with `__key__` and only the named fields (all if None)."""
    wanted = None if fields is None else set(fields)
    with open(path, "rb") as f:
        for key, members in scan_shard(path):
            sample: dict[str, Any] = {"__key__": key}
            for name, (offset, size) in members.items():
                if wanted is None or name in wanted:
                    f.seek(offset)
                    data = f.read(size)
                    sample[name] = decode_field(name, data) if decode else data
            yield sample


def iter_samples(root: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Every sample of a shard directory, in index order (for encode, tokenizer training, checks)."""
    fields = None if fields is None else list(fields)
    for path in ShardIndex.load(root).paths():
        yield from iter_shard(path, fields, decode)


def write_index(root: str | Path, meta: dict[str, Any] | None = None) -> ShardIndex:
    """Build index.json for a directory of `*.tar` shards written by another tool (sorted by name)."""
    root = Path(root)
    shards, fields = [], set()
    for path in sorted(root.glob("*.tar")):
        samples = scan_shard(path)
        shards.append(ShardInfo(path.name, len(samples), path.stat().st_size))
        for _, members in samples:
            fields.update(members)
    index = ShardIndex(root, shards, sorted(fields), dict(meta or {}))
    index.save()
    return index


class SampleReader:
    """Random access to samples by global id: seeks straight to the fields' bytes.

    Per shard, the member table (`scan_shard`) is built on first use and kept, and up to
    `max_open` files stay open (least recently used closed first); one reader per process or
    DataLoader worker. A shard whose sample count differs from index.json raises: it was
    changed after the index was written.
    """

    def __init__(self, index: ShardIndex, max_open: int = 16):
        self.index, self.max_open = index, max_open
        self._tables: dict[int, list] = {}
        self._files: OrderedDict[int, io.BufferedReader] = OrderedDict()

    def read_many(self, ids: Iterable[int], fields: Iterable[str], decode: bool = True) -> list[dict[str, Any]]:
        """Samples by global id, in the order given."""
        fields = list(fields)
        shards, positions = self.index.locate(np.fromiter(ids, dtype=np.int64))
        return [self._read(int(s), int(p), fields, decode) for s, p in zip(shards, positions)]

    def read(self, sample_id: int, fields: Iterable[str], decode: bool = True) -> dict[str, Any]:
        return self.read_many([sample_id], fields, decode)[0]

    def _read(self, shard: int, pos: int, fields: list[str], decode: bool) -> dict[str, Any]:
        key, members = self._table(shard)[pos]
        f = self._file(shard)
        sample: dict[str, Any] = {"__key__": key}
        for name in fields:
            if name not in members:
                raise KeyError(f"sample {key!r} in {self.index.shards[shard].name} has no field {name!r} "
                               f"(it has {sorted(members)})")
            offset, size = members[name]
            f.seek(offset)
            data = f.read(size)
            sample[name] = decode_field(name, data) if decode else data
        return sample

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _table(self, shard: int) -> list:
        if shard not in self._tables:
            info = self.index.shards[shard]
            table = scan_shard(self.index.root / info.name)
            if len(table) != info.count:
                raise ValueError(f"{info.name} holds {len(table)} samples but index.json says {info.count}: "
                                 f"the shard changed after the index was written")
            self._tables[shard] = table
        return self._tables[shard]

    def _file(self, shard: int) -> io.BufferedReader:
        if shard in self._files:
            self._files.move_to_end(shard)
        else:
            if len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
            self._files[shard] = open(self.index.root / self.index.shards[shard].name, "rb")
        return self._files[shard]
