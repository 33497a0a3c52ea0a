"""index.json and the per-shard offset files: what makes samples addressable by global index.

Why an index: loaders pick samples by global index (order = f(seed, epoch, index)), which needs
the number of samples in each shard before reading any; it also gives the data set a fingerprint
that a resumed run checks. index.json is written last, so it marks a finished directory.

Why offset files (`<shard>.idx`, one per shard, npy int64): the byte offset where each sample's
first tar header starts, plus the end of the last sample (`[count + 1]`); or, for a shard written
elsewhere whose bad samples indexing skipped, each kept sample's (start, end) (`[count, 2]`). A
reader then fetches any sample with one seek and one read, holding 8-16 bytes per sample of the
shards it has touched instead of scanning whole tars. Shards written elsewhere get them from
`megadalle index` (ingest/), which imports this module; this module imports no reader. A folder without
index.json is named with what it holds instead where that tells what to do (`not_shards`).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from megadalle.config.override import command_line
from megadalle.data import atomic
from megadalle.data.fields import IMAGE_FIELDS
from megadalle.data.nested import nested_note, nested_tars
from megadalle.data.summary import by_reason
from megadalle.data.tar import walk
from megadalle.errors import UserError

INDEX_NAME = "index.json"
INDEX_FORMAT = "megadalle-shards/1"
REPORT_NAME = "index-report.json"
"""Beside index.json in a folder `megadalle index` indexed: the samples it skipped, by shard, and why."""
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tzst", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
                   ".tar.lz4", ".tar.lzma")
"""Compressed tars, which no reader takes: a sample is read by seeking to its byte offset in the tar, which
compression hides (webdataset streams them whole; megadalle picks samples by index)."""


class ShardsNotFound(UserError, FileNotFoundError):
    """A shard directory without a finished index (the CLI prints it as one line)."""


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
    indexing: dict[str, Any] | None = None
    """What `megadalle index` read to write it (its options and every `*.tar`'s name, size and mtime_ns,
    `coverage.py`), so that a folder changed since is indexed again; None for megadalle's own outputs."""

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
        recorded = {} if self.indexing is None else {"indexing": self.indexing}
        return {"format": INDEX_FORMAT, "total": self.total, "fingerprint": self.fingerprint,
                "fields": self.fields, "meta": self.meta,
                "shards": [{"name": s.name, "count": s.count, "bytes": s.bytes} for s in self.shards], **recorded}

    def save(self) -> Path:
        return atomic.write_json(self.root / INDEX_NAME, self.to_json())

    @classmethod
    def readable(cls, root: str | Path) -> "ShardIndex | None":
        """The folder's index.json, or None when there is none or it cannot be read (what is there decides)."""
        try:
            return cls.load(root)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def load(cls, root: str | Path) -> "ShardIndex":
        root = Path(root)
        path = root / INDEX_NAME
        if not path.is_file():
            raise ShardsNotFound(f"{path} not found: {why_no_index(root)}")
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r}, expected {INDEX_FORMAT!r}")
        shards = [ShardInfo(s["name"], int(s["count"]), int(s["bytes"])) for s in data["shards"]]
        if not shards or sum(s.count for s in shards) == 0:
            raise ValueError(f"{path}: the index lists no samples")
        return cls(root, shards, list(data.get("fields", [])), dict(data.get("meta", {})), data.get("indexing"))


def why_no_index(root: Path) -> str:
    """What the folder `root`, which holds no index.json, holds instead and what to do. Tars in its subfolders come
    first: the advice to run `megadalle index` on it met that command's refusal of them (nested.py)."""
    nested = nested_tars(root) if root.is_dir() else []
    if nested:
        return nested_note(root, nested)
    return not_shards(root) or nothing_kept(root) or (
        f"{root} is not a finished megadalle shard directory (the writer writes index.json last); for shards made "
        f"elsewhere run `{command_line('index', dir=root)}`")


def is_compressed_tar(name: str) -> bool:
    return name.lower().endswith(COMPRESSED_TARS)


def compressed_note(root: Path) -> str:
    """What to say of the compressed tars in `root` (empty when none): that megadalle does not read them, and
    to decompress them."""
    found = sorted(p.name for p in root.iterdir() if is_compressed_tar(p.name)) if root.is_dir() else []
    if not found:
        return ""
    many = len(found) > 1
    return (f"{root} holds {len(found)} compressed tar{'s' if many else ''} ({found[0]}{', ...' if many else ''}), "
            f"which megadalle does not read (it seeks to each sample in a tar): decompress {'them' if many else 'it'} "
            "into plain .tar files (gunzip, zstd -d, ...)")


def not_shards(root: Path) -> str:
    """For a folder without `*.tar` shards, what it holds instead and what to do (compressed tars: decompress them;
    images: `prepare` makes shards of them); empty where tars lie (in a subfolder too: an unfinished parallel
    `encode`'s parts), or no folder. Readers advised `megadalle index DIR` for every such folder, which then found
    no *.tar to index."""
    if not root.is_dir() or any(root.rglob("*.tar")):
        return ""
    compressed = compressed_note(root)
    if compressed:
        return compressed
    image = next((p for p in root.rglob("*") if p.suffix.lower()[1:] in IMAGE_FIELDS and p.is_file()), None)
    if image is None:
        return f"{root} holds no *.tar shards: `megadalle prepare` makes them of images with captions"
    return (f"{root} holds images ({image.relative_to(root).as_posix()}, ...), not shards: make shards of them with "
            f"`{command_line('prepare', input=root, output='SHARDS')}` and use SHARDS instead")


def nothing_kept(root: Path) -> str:
    """For a folder of tars whose indexing found no usable sample (its report says so, and no index.json was
    written), that, and where the reasons are. The usual advice, to run `megadalle index`, was what had just
    happened."""
    try:
        report = json.loads((root / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(report, dict) or report.get("kept") != 0:
        return ""
    skipped = by_reason(report.get("skipped") or {})
    return (f"indexing {root} kept no sample of its tars ({skipped or 'they hold none'}); {root / REPORT_NAME} "
            "lists why each was skipped")


def offsets_path(shard: str | Path) -> Path:
    """`shard-000000.tar` -> `shard-000000.tar.idx`."""
    shard = Path(shard)
    return shard.with_name(shard.name + ".idx")


def scan_offsets(path: str | Path) -> tuple[np.ndarray, set[str]]:
    """Sample start offsets (+ end) of a tar by reading its headers, and the fields seen."""
    starts, fields, end = [], set(), 0
    with open(path, "rb") as f:
        for sample in walk(f, read=False):
            starts.append(sample.start)
            fields.update(sample.names)
            end = sample.end
    return np.array(starts + [end], dtype=np.int64), fields


def save_offsets(shard: str | Path, offsets: np.ndarray) -> Path:
    """Offsets as `[count + 1]` starts (contiguous samples) or `[count, 2]` spans (samples skipped between)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(offsets, dtype=np.int64), allow_pickle=False)
    return atomic.write_bytes(offsets_path(shard), buf.getvalue())


def load_offsets(shard: str | Path) -> np.ndarray:
    """The shard's offset file, or a header scan when there is none."""
    path = offsets_path(shard)
    if path.is_file():
        return np.load(path, allow_pickle=False)
    return scan_offsets(shard)[0]


def to_spans(offsets: np.ndarray) -> np.ndarray:
    """Either offset layout -> `[count, 2]` (start, end) byte spans, one row per sample."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim == 2:
        return offsets
    return np.stack([offsets[:-1], offsets[1:]], axis=1)


def compact(spans: np.ndarray) -> np.ndarray:
    """`[count, 2]` spans -> the `[count + 1]` layout when the samples are back to back, else unchanged."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(spans) and np.array_equal(spans[1:, 0], spans[:-1, 1]):
        return np.concatenate([spans[:, 0], spans[-1:, 1]])
    return spans


def offsets_count(offsets: np.ndarray) -> int:
    """Samples an offset array describes, in either layout."""
    return len(offsets) if np.ndim(offsets) == 2 else len(offsets) - 1


def combine(root: str | Path, parts: list[str | Path], meta: dict[str, Any] | None = None) -> ShardIndex:
    """One index.json at `root` over the finished shard directories `parts` (subdirectories of root),
    in the order given: how ranks that each wrote their own directory (e.g. a parallel `encode`)
    publish one data set. Raises if a part is unfinished or outside root."""
    root = Path(root).resolve()
    shards, fields, merged_meta = [], set(), {}
    for part in parts:
        index = ShardIndex.load(part)
        prefix = index.root.resolve().relative_to(root)  # ValueError if the part is not under root
        shards += [ShardInfo((prefix / s.name).as_posix(), s.count, s.bytes) for s in index.shards]
        fields.update(index.fields)
        merged_meta.update(index.meta)
    combined = ShardIndex(root, shards, sorted(fields), {**merged_meta, **(meta or {})})
    combined.save()
    return combined
