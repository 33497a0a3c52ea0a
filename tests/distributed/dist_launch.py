"""Start N ranks of a command on this machine the way torchrun would (RANK, WORLD_SIZE, ...)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from megadalle.train.distributed import free_port

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def base_env() -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def spawn(world: int, opts: dict, log_dir: Path, script: str = "dist_worker.py") -> list[subprocess.Popen]:
    """Start `world` ranks of `script` (toy worker by default) with `opts`; output to log_dir/rank<N>.log."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(world):
        env = dict(base_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        log = open(log_dir / f"rank{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, str(HERE / script), json.dumps(opts)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 240) -> None:
    """Wait for all ranks; on a failure raise with the ranks' log tails."""
    codes = [p.wait(timeout=timeout) for p in procs]
    if any(codes):
        tails = "\n".join(f"--- rank {i} (exit {c})\n" + (log_dir / f"rank{i}.log").read_text()[-3000:]
                          for i, c in enumerate(codes))
        raise AssertionError(f"ranks failed: {codes}\n{tails}")


def run(world: int, opts: dict, log_dir: Path, timeout: float = 240, script: str = "dist_worker.py") -> None:
    wait(spawn(world, opts, log_dir, script), log_dir, timeout)


def losses(run_dir: Path) -> dict[int, float]:
    """Step -> loss from rank 0's metrics.jsonl (the last record of a step wins, as after a resume)."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["loss"]
    return out
