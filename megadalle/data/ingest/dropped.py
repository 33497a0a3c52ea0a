"""What indexing left out of a folder of tars written elsewhere, by reason: what `prepare` adds to its own skips.

Indexing leaves the samples it cannot train on out of the offset files (no caption, no image, a corrupt one), so
`prepare` reading the folder never sees them: its summary said `skipped 0` of a folder where 6 of 16 samples had
no caption, and when the folder had been indexed beforehand nothing at all said so. The reasons are in the folder's
index report; index.json records how many each tar lost, which tells a report that lists them all from one written
for another indexing (`report=` elsewhere): those are counted under UNLISTED.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from megadalle.data.index import REPORT_NAME, ShardIndex
from megadalle.data.reuse import report_entries

UNLISTED = "left_out_by_index"
"""The reason of samples the index left out that its report beside it does not list."""


def dropped(root: Path) -> Counter[str]:
    """The samples the index of `root` left out, per reason; none for megadalle's own outputs (written whole)."""
    index = ShardIndex.load(root)
    if index.indexing is None:
        return Counter()
    bad, _ = report_entries(root / REPORT_NAME)
    reasons: Counter[str] = Counter()
    for tar in index.indexing.get("tars", []):
        entries = bad[tar["name"]]
        left_out = int(tar.get("skipped", len(entries)))  # an index recorded before its tars' findings: the report
        if len(entries) == left_out:
            reasons.update(entry["reason"] for entry in entries)
        else:
            reasons[UNLISTED] += left_out
    return reasons
