"""Field-wise readers of shard directories: sequential (`iter_samples`) and by global id (`SampleReader`).

Both read samples by their byte spans from the offset files, so samples that indexing skipped in
a shard written elsewhere are never seen.

They never unpickle and never extract to disk: they return the raw bytes of the fields asked for,
or decode them with `fields.decode_field`, which knows only safe extensions. Members of other
fields, links and directories are skipped.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from megadalle.data.fields import decode_field
from megadalle.data.index import ShardIndex, load_offsets, offsets_count, offsets_path, to_spans
from megadalle.data.ingest import open_index
from megadalle.data.tar import walk


def parse_samples(data: bytes | io.BufferedReader, wanted: set[str] | None, decode: bool) -> Iterator[dict[str, Any]]:
    """Samples of a tar stream (a whole shard or one sample's bytes), with the wanted fields only."""
    for sample in walk(data, wanted):
        fields = {name: decode_field(name, raw) if decode else raw for name, raw in sample.data.items()}
        yield {"__key__": sample.key, **fields}


def iter_shard(path: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order, with `__key__` and only the named fields (all if None): those its offset
    file lists when it has one (so samples skipped by indexing stay skipped), else every sample of the tar."""
    wanted = None if fields is None else set(fields)
    with open(path, "rb") as f:
        if not offsets_path(path).is_file():
            yield from parse_samples(f, wanted, decode)
            return
        for start, end in to_spans(load_offsets(path)):
            f.seek(int(start))
            yield from parse_samples(f.read(int(end - start)), wanted, decode)


def iter_samples(root: str | Path, fields: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Every sample of a shard directory, in index order (for encode, tokenizer training, checks); a directory
    of tars written elsewhere is indexed first (`ingest.open_index`)."""
    fields = None if fields is None else list(fields)
    for path in open_index(root).paths():
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

    def read_many(self, ids: Iterable[int], fields: Iterable[str], decode: bool = True,
                  required: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Samples by global id, in the order given, each with `__key__` and those of the named fields it has;
        a sample missing one of `required` (default: all of `fields`) raises a KeyError naming it."""
        fields = list(fields)
        required = fields if required is None else list(required)
        shards, positions = self.index.locate(np.fromiter(ids, dtype=np.int64))
        return [self.read_at(int(s), int(p), fields, decode, required) for s, p in zip(shards, positions)]

    def read(self, sample_id: int, fields: Iterable[str], decode: bool = True) -> dict[str, Any]:
        return self.read_many([sample_id], fields, decode)[0]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def read_at(self, shard: int, pos: int, fields: list[str] | None, decode: bool = True,
                required: list[str] | None = None) -> dict[str, Any]:
        """Sample `pos` of shard number `shard`, with the named fields (all if None); `required` as in read_many."""
        start, end = self._table(shard)[pos]
        path = self.index.root / self.index.shards[shard].name
        f = self._lru(self._files, shard, self.max_open, lambda: open(path, "rb"))
        f.seek(int(start))
        samples = list(parse_samples(f.read(int(end - start)), None if fields is None else set(fields), decode))
        name = self.index.shards[shard].name
        if len(samples) != 1:
            raise ValueError(f"{name}: sample {pos} does not span exactly one key; the offset file is stale")
        missing = [field for field in (fields or () if required is None else required) if field not in samples[0]]
        if missing:
            raise KeyError(f"sample {samples[0]['__key__']!r} in {name} has no field {missing[0]!r}")
        return samples[0]

    def _table(self, shard: int) -> np.ndarray:
        def load() -> np.ndarray:
            info = self.index.shards[shard]
            offsets = load_offsets(self.index.root / info.name)
            if offsets_count(offsets) != info.count:
                raise ValueError(f"{info.name} holds {offsets_count(offsets)} samples but index.json says "
                                 f"{info.count}: the shard changed after the index was written")
            return to_spans(offsets)

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
