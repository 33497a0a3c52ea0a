"""One directory per run, chosen once by rank 0 and shared with every rank.

Per-rank timestamps would give each rank its own directory; instead rank 0 picks the path and
broadcasts it. Without an explicit `run_dir`, a Slurm job uses its job id (stable across
requeues, so a requeued job finds and resumes its own checkpoints) and anything else a timestamp.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from megadalle.train.distributed import broadcast_object


def choose(run_dir: str | None, out_dir: str, name: str, rank: int) -> Path:
    """The run directory every rank agrees on (created by rank 0)."""
    path = None
    if rank == 0:
        if run_dir:
            path = Path(run_dir)
        else:
            job = os.environ.get("SLURM_JOB_ID")
            path = Path(out_dir) / name / (f"slurm-{job}" if job else time.strftime("%Y%m%d-%H%M%S"))
        path.mkdir(parents=True, exist_ok=True)
        path = str(path.resolve())
    return Path(broadcast_object(path))
