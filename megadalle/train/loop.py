"""The generic training loop: any Task, any DeepSpeed layout, resumable bit for bit.

`train(task, ...)` starts distributed (from the launcher's environment), picks the run directory
(rank 0), builds the engine, resumes from the newest complete checkpoint, then runs updates until
`trainer.steps`, saving every `checkpoint_every` updates, at the end, and when SIGUSR1/SIGTERM
arrives (then it stops after the save). An update whose gradients are not finite is skipped by
DeepSpeed's ZeRO optimizer (stages 1-3: no weight or schedule change) and counted in the logged
`skipped_steps`; stage 0 has no such check, so a non-finite loss there stops the run instead. The data position is the update index: batches come from
`task.batches(start_step, part)`, so resuming needs no seeking.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from megadalle.config.train import DeepSpeedConfig, LoggerConfig, TrainerConfig
from megadalle.train import checkpoint, distributed, engine as engine_lib, rng, rundir
from megadalle.train.callbacks import Callback, RunInfo
from megadalle.train.console import Console
from megadalle.train.ema import EMA
from megadalle.train.signals import StopFlag
from megadalle.train.speed import Speed
from megadalle.train.steps import StepRunner
from megadalle.train.task import DataPart, Task
from megadalle.train.wandb_log import Wandb


@dataclass
class RunOptions:
    """Verb-level choices: where the run lives, how it resumes, its seed, what to record."""

    out_dir: str = "outputs"
    run_dir: str | None = None
    """Explicit run directory; None = `<out_dir>/<task>/<slurm-JOBID or timestamp>` chosen by rank 0."""
    resume: str = "auto"
    """auto (newest complete checkpoint, else fresh), never, or the path of a step_* directory."""
    seed: int = 0
    config: dict = field(default_factory=dict)
    """The full config, saved as run.json with `task_factory` so `megadalle export` can rebuild the model."""
    task_factory: str | None = None
    """`module:function` that rebuilds the task from `config` (used by export)."""


@dataclass
class Result:
    run_dir: Path
    step: int
    """Updates completed."""
    stopped_by_signal: bool
    losses: list[float]
    """This process's losses of the updates it ran (global means)."""
    engine: Any = None
    """The DeepSpeed engine, still live (e.g. to evaluate the trained model; ZeRO-3 needs it for gathering)."""
    model: Any = None
    """The task's plain model (its parameters are the engine's; under pipelines only this stage's are trained)."""


def train(task: Task, trainer: TrainerConfig, ds: DeepSpeedConfig, logger: LoggerConfig, run: RunOptions,
          extra_callbacks: list[Callback] | None = None) -> Result:
    env = distributed.detect()
    distributed.init(env)
    if trainer.ema is not None and ds.zero_stage == 3:
        raise ValueError("trainer.ema is not supported with deepspeed.zero_stage=3 (parameters are sharded); "
                         "set trainer.ema=null or use zero1/zero2")
    run_dir = rundir.choose(run.run_dir, run.out_dir, task.name, env.rank)
    rng.seed_all(run.seed)
    built = engine_lib.build(task, trainer, ds, env.world_size)
    trained = {id(p) for p in built.engine.module.parameters()}
    ema = EMA(built.model, trained, trainer.ema) if trainer.ema is not None else None

    ckpt_root = run_dir / "checkpoints"
    chosen = None
    if env.rank == 0:
        found = checkpoint.resolve(run.resume, ckpt_root)
        chosen = str(found) if found else None
    chosen = distributed.broadcast_object(chosen)
    state = {}
    if chosen is not None:
        state = checkpoint.load(built.engine, Path(chosen), env.rank, ema)
        print(f"[train] rank {env.rank} resumed from {chosen} at step {state['step']}", flush=True)
    else:
        rng.seed_all(run.seed + 1 + env.rank)
    start = int(state.get("step", 0))
    samples_seen = int(state.get("samples_seen", 0))

    part = DataPart(trainer.micro_batch, trainer.grad_accum, built.dp_rank, built.dp_world)
    data_identity = task.data_identity(part)
    check_data_identity(state.get("data_identity"), data_identity, chosen)
    if env.rank == 0 and chosen is None:
        (run_dir / "run.json").write_text(json.dumps({"task_factory": run.task_factory, "config": run.config},
                                                     indent=1, default=str))
    wandb_cb = Wandb(logger)
    devices = env.world_size
    speed = Speed(part.global_batch, task.tokens_per_sample(), task.flops_per_sample(built.model),
                  logger.peak_tflops, devices)
    callbacks: list[Callback] = [speed, Console(), wandb_cb, *(extra_callbacks or [])]
    info = RunInfo(run_dir, env.rank, env.world_size, start, trainer.steps, run.config, state.get("wandb_id"))
    for cb in callbacks:
        cb.start(info)

    stop = StopFlag().install()
    runner = StepRunner(task, built, part, start)
    losses: list[float] = []
    step, stopped = start, False
    nonfinite = int(state.get("nonfinite_losses", 0))

    def client_state() -> dict:
        return {"step": step, "samples_seen": samples_seen, "data_step": step, "data_identity": data_identity,
                "wandb_id": wandb_cb.run_id,
                "world_size": env.world_size, "nonfinite_losses": nonfinite}

    try:
        while step < trainer.steps:
            lr = built.engine.get_lr()[0]
            began = time.perf_counter()
            metrics = runner.update(step)
            if ema is not None:
                ema.update()
            metrics["step_seconds"] = time.perf_counter() - began
            samples_seen += part.global_batch
            if not math.isfinite(metrics["loss"]):
                nonfinite += 1
                if ds.zero_stage == 0:
                    raise FloatingPointError(f"non-finite loss at step {step} with deepspeed.zero_stage=0, which "
                                             "cannot skip the update; resume from the last checkpoint (ZeRO 1-3 skip it)")
            metrics.update(lr=lr, samples_seen=samples_seen,
                           skipped_steps=float(getattr(built.engine, "skipped_steps", 0)),
                           nonfinite_losses=nonfinite)
            losses.append(metrics["loss"])
            for cb in callbacks:
                cb.step(step, metrics)
            if (step + 1) % trainer.log_every == 0 or step + 1 == trainer.steps:
                for cb in callbacks:
                    cb.log(step, metrics)
            if trainer.media_every and (step + 1) % trainer.media_every == 0 and built.pipeline is None:
                with torch.no_grad():
                    values = task.media(built.model, step)
                for cb in callbacks:
                    cb.media(step, values)
            step += 1
            stopped = distributed.any_rank(stop.set)
            periodic = trainer.checkpoint_every and step % trainer.checkpoint_every == 0
            if stopped or periodic or step == trainer.steps:
                checkpoint.save(built.engine, ckpt_root, step, client_state(), env.rank, ema,
                                trainer.keep_checkpoints)
            if stopped:
                print(f"[train] rank {env.rank}: stop signal, checkpoint saved at step {step}", flush=True)
                break
    finally:
        stop.uninstall()
        for cb in callbacks:
            cb.end()
    return Result(run_dir, step, stopped, losses, built.engine, built.model)


def check_data_identity(saved: dict | None, current: dict, checkpoint_path: str | None) -> None:
    """Refuse to resume on data whose order differs from the checkpoint's (see Task.data_identity)."""
    if not saved:
        return
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise checkpoint.CheckpointError(
                f"cannot resume {checkpoint_path}: it was trained with data {key}={saved.get(key)!r}, this run has "
                f"{key}={current.get(key)!r}; an exact resume needs the same data, seed and global batch")


def train_from_config(task: Task, cfg, task_factory: str | None = None) -> Result:
    """`train` with the shared keys of a training verb's composed config: the `trainer`, `deepspeed`
    and `logger` groups plus top-level `seed`, `out_dir`, `run_dir` (optional) and `resume` (optional).
    This is what `train`, `train-dvae` and `train-clip` call from their `run(cfg)`."""
    from omegaconf import OmegaConf

    from megadalle.config import build

    run = RunOptions(out_dir=str(cfg.get("out_dir", "outputs")), run_dir=cfg.get("run_dir"),
                     resume=str(cfg.get("resume", "auto")), seed=int(cfg.get("seed", 0)),
                     config=OmegaConf.to_container(cfg, resolve=True), task_factory=task_factory)
    return train(task, build(TrainerConfig, cfg.trainer, "trainer"), build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"),
                 build(LoggerConfig, cfg.logger, "logger"), run)
