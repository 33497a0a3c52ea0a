"""`megadalle index DIR` (or `dir=DIR`): the verb around `folder.index_directory`."""
from __future__ import annotations

from megadalle.data.ingest.folder import index_directory
from megadalle.data.summary import NoUsableInput


def run(cfg) -> int:
    """`megadalle index DIR` (or `dir=DIR`); NoUsableInput (one line, exit code 2) when no sample is usable."""
    from megadalle.config import build, top_level
    from megadalle.config.data import IndexConfig

    ic = build(IndexConfig, top_level(cfg, IndexConfig), "")
    summary = index_directory(ic.dir, ic.require, ic.require_media, ic.num_workers, progress=True, report=ic.report,
                              decode=ic.decode, min_side=ic.min_side)
    print(summary.text())
    if not summary.kept:
        raise NoUsableInput(f"dir={str(ic.dir)!r}", summary)
    return 0
