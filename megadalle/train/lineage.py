"""Lineage: the checkpoint each checkpoint continues, and the ones its history resumed from by name.

Every manifest records both (checkpoint_save.py writes them). `parent` tells a save stopped between its manifest and
`latest` from a leftover: the newer complete checkpoint continues the one `latest` names. `resumed_from` makes
`resume=<step dir>` safe to repeat: Slurm requeues the same command line, and a run that already went back to
that checkpoint once and trained past it continues from its newest checkpoint instead of going back again.

A checkpoint in the same `checkpoints/` directory is written as its tag, so a run directory can move; one
elsewhere (resumed from another run) as its absolute path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lineage:
    parent: Path | None = None
    """The checkpoint this one continues (absolute); None for a run started from scratch."""
    resumed_from: tuple[Path, ...] = ()
    """The checkpoints its history resumed from by `resume=<step dir>` (absolute), oldest first."""

    def fields(self, root: Path) -> dict:
        """The manifest fields of a checkpoint saved under `root`."""
        return {"parent": None if self.parent is None else _entry(self.parent, root),
                "resumed_from": [_entry(p, root) for p in self.resumed_from]}

    @classmethod
    def of(cls, record: dict, root: Path) -> Lineage:
        """The lineage a manifest `record` of a checkpoint saved under `root` holds (none in older manifests)."""
        parent = record.get("parent")
        return cls(None if parent is None else _path(parent, root),
                   tuple(_path(entry, root) for entry in record.get("resumed_from", ())))

    def after(self, path: Path, by_name: bool = False) -> Lineage:
        """The lineage of a save that continues the checkpoint `path` (this one's), `by_name` when a
        `resume=<path>` chose it."""
        path = path.resolve()
        return Lineage(path, self.resumed_from + ((path,) if by_name and path not in self.resumed_from else ()))


def _entry(path: Path, root: Path) -> str:
    return path.name if path.parent == root.resolve() else str(path)


def _path(entry: str, root: Path) -> Path:
    return root.resolve() / entry if "/" not in entry else Path(entry)
