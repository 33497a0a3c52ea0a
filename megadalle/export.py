"""`megadalle export run=DIR output=DIR`: a training run's checkpoint as user weights (megadalle.weights).

The work is megadalle.train.consolidate's (streaming, whatever layout trained the run); this verb
only parses its keys (megadalle.config.export) and reports. `export` and `load_run` are re-exported
for callers above train/ (the demo).
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.export import ExportConfig
from megadalle.train.consolidate import export, load_run

__all__ = ["export", "load_run", "run"]


def run(cfg: DictConfig) -> int:
    ec = build(ExportConfig, top_level(cfg, ExportConfig), "")
    path = export(ec.run, ec.output, ec.checkpoint, ec.ema, ec.dtype, ec.max_shard_mb * 10**6)
    print(f"[export] wrote {path} ({ec.dtype}{', EMA' if ec.ema else ''})", file=sys.stderr)
    return 0
