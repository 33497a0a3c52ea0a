"""Field-wise readers of shard directories: sequential (`iter_samples`) and by global id (`SampleReader`).

They never unpickle and never extract to disk: they return the raw bytes of the fields asked for,
or decode them with `fields.decode_field`, which knows only safe extensions. Members of other
fields, links and directories are skipped.
"""
from __future__ import annotations

import io
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from megadalle.data.fields import decode_field, split_member
from megadalle.data.index import ShardIndex, load_offsets


def parse_samples(data: bytes | io.BufferedReader, wanted: set[str] | None, decode: bool) -> Iterator[dict[str, Any]]:
    """Samples of a tar stream (a whole shard or one sample's bytes), with the wanted fields only."""
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    sample: dict[str, Any] | None = None
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for info in tar:
            key, name = split_member(info.name)
            if not info.isfile() or not name:
                continue
            if sample is None or sample["__key__"] != key:
                if sample is not None:
                    yield sample
                sample = {"__key__": key}
            if wanted is None or name in wanted:
                raw = tar.extractfile(info).read()
                sample[name] = decode_field(name, raw) if decode else raw
    if sample is not None:
        yield sample


def iter_shard(path: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order, with `__key__` and only the named fields (all if None)."""
    with open(path, "rb") as f:
        yield from parse_samples(f, None if fields is None else set(fields), decode)


def iter_samples(root: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Every sample of a shard directory, in index order (for encode, tokenizer training, checks)."""
    fields = None if fields is None else list(fields)
    for path in ShardIndex.load(root).paths():
        yield from iter_shard(path, fields, decode)


class SampleReader:
    """Random access to samples by global id: one seek and one read per sample.

    Offsets of up to `max_tables` shards (8 bytes per sample) and up to `max_open` open files are
    kept, least recently used dropped first; one reader per process or DataLoader worker. A shard
    whose sample count differs from index.json raises: it changed after the index was written.
    """

    def __init__(self, index: ShardIndex, max_open: int = 16, max_tables: int = 4096):
        self.index, self.max_open, self.max_tables = index, max_open, max_tables
        self._offsets: OrderedDict[int, np.ndarray] = OrderedDict()
        self._files: OrderedDict[int, io.BufferedReader] = OrderedDict()

    def read_many(self, ids: Iterable[int], fields: Iterable[str], decode: bool = True) -> list[dict[str, Any]]:
        """Samples by global id, in the order given, each with `__key__` and the named fields."""
        fields = list(fields)
        shards, positions = self.index.locate(np.fromiter(ids, dtype=np.int64))
        return [self._read(int(s), int(p), fields, decode) for s, p in zip(shards, positions)]

    def read(self, sample_id: int, fields: Iterable[str], decode: bool = True) -> dict[str, Any]:
        return self.read_many([sample_id], fields, decode)[0]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _read(self, shard: int, pos: int, fields: list[str], decode: bool) -> dict[str, Any]:
        offsets = self._table(shard)
        path = self.index.root / self.index.shards[shard].name
        f = self._lru(self._files, shard, self.max_open, lambda: open(path, "rb"))
        f.seek(int(offsets[pos]))
        samples = list(parse_samples(f.read(int(offsets[pos + 1] - offsets[pos])), set(fields), decode))
        name = self.index.shards[shard].name
        if len(samples) != 1:
            raise ValueError(f"{name}: sample {pos} does not span exactly one key; the offset file is stale")
        missing = [field for field in fields if field not in samples[0]]
        if missing:
            raise KeyError(f"sample {samples[0]['__key__']!r} in {name} has no field {missing[0]!r}")
        return samples[0]

    def _table(self, shard: int) -> np.ndarray:
        def load() -> np.ndarray:
            info = self.index.shards[shard]
            offsets = load_offsets(self.index.root / info.name)
            if len(offsets) - 1 != info.count:
                raise ValueError(f"{info.name} holds {len(offsets) - 1} samples but index.json says {info.count}: "
                                 f"the shard changed after the index was written")
            return offsets

        return self._lru(self._offsets, shard, self.max_tables, load)

    @staticmethod
    def _lru(cache: OrderedDict, key: int, limit: int, make):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        if len(cache) >= limit:
            old = cache.popitem(last=False)[1]
            if hasattr(old, "close"):
                old.close()
        cache[key] = make()
        return cache[key]
