"""Indexing a folder again reads only its new and changed tars: what the last indexing found in the others is kept.

img2dataset adds tars to a folder that is already in use, and every change means indexing it again (coverage.py).
Reading every tar again took hours, at thousands of tars, for one new shard. So indexing records, beside each tar's
name and size (index.json's `indexing.tars`), what it found in it: the samples it kept, their fields and image
sizes, and how many samples it skipped or warned about. The kept samples' offsets are in the tar's offset file and
the skipped samples' entries in the report. A tar whose name and size are those recorded (the rule coverage.py
compares by: a copy changes the mtime of an unchanged tar) is then taken from these records unread, and the index
comes out as a full indexing of the folder would write it. A tar is read again whenever a piece is missing: an
index written before these records, or under other options (`require`, `decode`...), its offset file gone, or a
report whose entries for it do not add up (one written elsewhere with `report=`, or a later one's).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megadalle.data.coverage import rewritten
from megadalle.data.index import ShardIndex, offsets_path

ADDED_OPTIONS = {"min_side": 0}
"""Indexing options added after indexes first recorded theirs, at the value an index that lacks one was written
under: a folder indexed before min_side existed is not read again for it."""

SIZES_KEPT = 2
"""Image sizes recorded per tar: the index asks only whether the whole folder has one, which two already deny."""


@dataclass
class TarFindings:
    """What indexing found in one tar: all that a new index takes from it."""

    name: str
    count: int
    """Samples kept (those its offset file lists)."""
    fields: list[str]
    """Fields of the kept samples, sorted."""
    image_sizes: list[list[int]]
    """The kept samples' image sizes (width, height), sorted, at most `SIZES_KEPT` of them."""
    skipped: list[dict[str, str]]
    """The report's `bad` entries of this tar, in the order indexing found them."""
    warnings: list[dict[str, str]]
    """The report's `warnings` entries of this tar."""

    @classmethod
    def read(cls, name: str, count: int, fields: set[str], image_sizes: set[tuple[int, int]],
             skipped: list[dict[str, str]], warnings: list[dict[str, str]]) -> "TarFindings":
        """The findings of a tar just read."""
        return cls(name, count, sorted(fields), [list(size) for size in sorted(image_sizes)[:SIZES_KEPT]], skipped,
                   warnings)

    def record(self, stat: dict[str, Any]) -> dict[str, Any]:
        """The tar's entry in `indexing.tars`: its `stat` (coverage.tar_stats) and these findings, counted where
        the report holds them."""
        return {**stat, "count": self.count, "fields": self.fields, "image_sizes": self.image_sizes,
                "skipped": len(self.skipped), "warned": len(self.warnings)}


def reusable(root: Path, tars: list[dict[str, Any]], options: dict[str, Any], report: Path) -> dict[str, TarFindings]:
    """Findings of the tars in `tars` (the folder now, as coverage.tar_stats lists it) that root's index recorded at
    their present size under these `options`, by name; those missing from the result must be read. `report` is the
    earlier indexing's report (where this one writes its own)."""
    old = ShardIndex.readable(root)
    if old is None:  # none, or unreadable: every tar is read
        return {}
    recorded = old.indexing or {}
    if any(recorded.get(key, ADDED_OPTIONS.get(key)) != value for key, value in options.items()):
        return {}
    now = {tar["name"]: tar for tar in tars}
    listed = {shard.name: shard for shard in old.shards}
    bad, warned = report_entries(report)
    found = {}
    for tar in recorded.get("tars", []):
        try:
            name, count = tar["name"], int(tar["count"])
            kept = TarFindings(name, count, list(tar["fields"]), list(tar["image_sizes"]), bad[name], warned[name])
            counted = (len(kept.skipped), len(kept.warnings)) == (int(tar["skipped"]), int(tar["warned"]))
        except (KeyError, TypeError, ValueError):  # recorded before findings were
            continue
        shard = listed.get(name)
        offsets = (shard is not None and (shard.count, shard.bytes) == (count, tar["bytes"])
                   and offsets_path(root / name).is_file())
        same = name in now and now[name]["bytes"] == tar["bytes"] and not rewritten(root, now[name], tar)
        if same and counted and (offsets if count else shard is None):
            found[name] = kept
    return found


def report_entries(report: Path) -> tuple[defaultdict[str, list], defaultdict[str, list]]:
    """The report's `bad` and `warnings` entries by tar name (none when it is missing or unreadable)."""
    bad, warned = defaultdict(list), defaultdict(list)
    try:
        data = json.loads(report.read_text())
        for entries, by_tar in ((data["bad"], bad), (data["warnings"], warned)):
            for entry in entries:
                by_tar[entry["shard"]].append(entry)
    except (OSError, ValueError, KeyError, TypeError):
        return defaultdict(list), defaultdict(list)
    return bad, warned
