"""Start N ranks of a command on this machine the way torchrun would (RANK, WORLD_SIZE, ...).

A rank is a fork of a server that has imported torch and DeepSpeed once (multiprocessing's forkserver, shared by the
test session), not a new interpreter: each rank's imports took 3-4 s of the 2 cores, about a third of a distributed
test, paid over a hundred times. The fork runs the worker script as `python script opts` would (its environment,
argv, `__main__`, output to the log file, atexit handlers at the end); `Rank` answers as a Popen does.
"""
from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
from pathlib import Path

from megadalle.train.distributed import free_port

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
PRELOAD = ["torch", "torch.distributed", "torch._dynamo", "torch._inductor.compile_fx", "deepspeed", "omegaconf",
           "hydra", "safetensors"]
"""What the fork server imports before it forks a rank: the third-party modules every worker imports (megadalle's
own are left to each rank, as their imports may read the rank's environment). Inductor's compile_fx because
DeepSpeed's ZeRO imports its Muon optimizer at `initialize`, whose `torch.compile` decorators import it: 1.3 s of
each ZeRO rank, a third of the time of the distributed tests that start ranks."""


def base_env() -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


class Rank:
    """A rank started by `spawn`, with the part of Popen's interface the tests use."""

    def __init__(self, process: multiprocessing.Process, args: list[str]):
        self.process, self.args = process, args

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


def run_script(script: str, argv: list[str], env: dict[str, str], log: str) -> None:
    """In the forked rank: `python script *argv` with `env`, stdout and stderr to `log`."""
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd in (1, 2):
        os.dup2(out, fd)
    os.close(out)
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    sys.argv = [script, *argv]
    sys.path[:0] = [str(Path(script).parent), str(ROOT)]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


def fork_server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def spawn(world: int, opts: dict, log_dir: Path, script: str = "dist_worker.py") -> list[Rank]:
    """Start `world` ranks of `script` (toy worker by default) with `opts`; output to log_dir/rank<N>.log."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    context, ranks = fork_server(), []
    for rank in range(world):
        env = dict(base_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        args = [str(HERE / script), json.dumps(opts)]
        process = context.Process(target=run_script, args=(args[0], args[1:], env, str(log_dir / f"rank{rank}.log")))
        process.start()
        ranks.append(Rank(process, args))
    return ranks


def wait(procs: list[Rank], log_dir: Path, timeout: float = 240) -> None:
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
