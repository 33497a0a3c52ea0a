"""Does an index still cover its folder? What `megadalle index` records of the tars it read, and the comparison.

A folder of tars written elsewhere keeps changing after it is indexed: img2dataset is still downloading
and adds `00002.tar`, `00003.tar`, or rewrites a tar it had cut short. An index that is simply reused
then reads half the data set without a word. So indexing records every `*.tar` it found, by name, size
and mtime_ns (the tars it skipped as unusable too), with what it found in each (`reuse.py`: indexing again
reads only the tars that differ), and `ingest.open_index` compares that record with the folder each time it
opens one, by name and size: any difference means indexing again (or a refusal, where the folder is read-only). megadalle's own outputs (`prepare`, `encode`) are written whole by their writer, which
lists every shard it wrote: they carry no record and are not compared. The mtime is recorded, not compared: a
copy (`cp` without -p, a tar round trip that keeps whole seconds, an object-store sync) changes it on an unchanged
data set, which was then decoded again in full, or refused on a read-only mount.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megadalle.data.index import REPORT_NAME, ShardIndex

INDEXED_BY = "megadalle index"
"""index.json's meta.indexed_by of a folder `megadalle index` wrote: one indexed before the record existed
is told from megadalle's own outputs by it."""
SHOWN = 5
"""Names listed per kind of change; the rest are counted."""


def tar_stats(root: Path) -> list[dict[str, Any]]:
    """Name, size and mtime_ns of every `*.tar` in `root`, sorted by name (a tar removed meanwhile is left out)."""
    stats = []
    for path in sorted(root.glob("*.tar")):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        stats.append({"name": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return stats


@dataclass
class Changes:
    """How the tars of a folder differ from those its index covers (false when they do not)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.gone)

    def __str__(self) -> str:
        kinds = (("new", self.new), ("changed", self.changed), ("gone", self.gone))
        return "; ".join(f"{kind}: {_names(names)}" for kind, names in kinds if names)


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def changes(index: ShardIndex) -> Changes:
    """How the folder's tars differ from what `index` covers; nothing for megadalle's own outputs."""
    if index.indexing is not None:
        return _recorded_changes(index)
    if index.meta.get("indexed_by") == INDEXED_BY:
        return _unrecorded_changes(index)
    return Changes()


def _recorded_changes(index: ShardIndex) -> Changes:
    now = {s["name"]: s for s in tar_stats(index.root)}
    before = {s["name"]: s for s in index.indexing["tars"]}
    return Changes(new=sorted(now.keys() - before.keys()), gone=sorted(before.keys() - now.keys()),
                   changed=sorted(name for name in now.keys() & before.keys()
                                  if now[name]["bytes"] != before[name]["bytes"]))


def _unrecorded_changes(index: ShardIndex) -> Changes:
    """An index written before indexing recorded its tars: the tars it lists must be there at their size, and no
    other `*.tar` may be there but those its report (index-report.json beside it) names, which indexing read and
    found no usable sample in. Sizes alone cannot tell a tar rewritten in place; the next indexing records more."""
    found, unusable = {s["name"] for s in tar_stats(index.root)}, _reported_tars(index.root)
    listed = {s.name: s.bytes for s in index.shards}
    sizes = {name: (index.root / name).stat().st_size for name in listed if (index.root / name).is_file()}
    return Changes(new=sorted(found - listed.keys() - unusable), gone=sorted(listed.keys() - sizes.keys()),
                   changed=sorted(name for name, size in sizes.items() if size != listed[name]))


def _reported_tars(root: Path) -> set[str]:
    """Shards the index report beside the index names (none when it is missing or unreadable)."""
    try:
        return {bad["shard"] for bad in json.loads((root / REPORT_NAME).read_text())["bad"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
