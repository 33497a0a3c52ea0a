"""`megadalle index DIR` (or `dir=DIR`): the verb around `folder.index_directory`."""
from __future__ import annotations

from megadalle.data.ingest.folder import index_directory


def run(cfg) -> int:
    """`megadalle index DIR` (or `dir=DIR`); exit code 1 when no sample is usable."""
    from megadalle.config import build, top_level
    from megadalle.config.data import IndexConfig

    ic = build(IndexConfig, top_level(cfg, IndexConfig), "")
    summary = index_directory(ic.dir, ic.require, ic.require_media, ic.num_workers, progress=True, report=ic.report,
                              decode=ic.decode, min_side=ic.min_side)
    print(summary.text())
    if not summary.kept:
        print(f"index: no usable sample in {ic.dir}; no index.json written", flush=True)
        return 1
    return 0
