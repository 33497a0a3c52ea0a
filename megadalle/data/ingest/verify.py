"""What is wrong with an indexed shard folder now, against what its index.json records (for tools and tests:
a reader trusts the index, and a folder changed since is indexed again on first use, `first_use.py`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from megadalle.data.fields import decode_field
from megadalle.data.index import ShardIndex, load_offsets, offsets_count, to_spans
from megadalle.data.tar import walk


def verify(root: str | Path, decode_fields: list[str] | None = None) -> list[str]:
    """Problems of an indexed shard directory (empty list: healthy): files missing or resized since the index,
    offset files that disagree with the counts, and, for `decode_fields`, samples that fail to decode."""
    index, problems = ShardIndex.load(root), []
    for info, path in zip(index.shards, index.paths()):
        if not path.is_file():
            problems.append(f"{info.name}: missing")
            continue
        if path.stat().st_size != info.bytes:
            problems.append(f"{info.name}: {path.stat().st_size} bytes, index.json says {info.bytes}")
            continue
        offsets = load_offsets(path)
        if offsets_count(offsets) != info.count:
            problems.append(f"{info.name}: {offsets_count(offsets)} samples in its offsets, index.json says "
                            f"{info.count}")
            continue
        if decode_fields:
            problems += _decode_problems(path, to_spans(offsets), decode_fields)
    return problems


def _decode_problems(path: Path, spans: np.ndarray, fields: list[str]) -> list[str]:
    problems = []
    with open(path, "rb") as f:
        for start, end in spans:
            f.seek(int(start))
            try:
                for sample in walk(f.read(int(end - start)), set(fields)):
                    missing = [name for name in fields if name not in sample.data]
                    if missing:
                        problems.append(f"{path.name}: sample {sample.key!r} lacks {missing}")
                    for name in fields:
                        if name in sample.data:
                            decode_field(name, sample.data[name])
            except Exception as err:
                problems.append(f"{path.name}: {type(err).__name__}: {err}")
    return problems
