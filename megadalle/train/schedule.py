"""Learning rate: linear warm-up to the peak, then cosine/linear decay to a floor (the paper's shape).

A pure function of the update index, wrapped in a LambdaLR that DeepSpeed steps once per update
and saves in its checkpoint, so a resumed run continues on the same curve. Each checkpoint's manifest records the
curve's keys (SCHEDULE): a resume under other keys that move the rate at its step is warned against that curve.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from megadalle.config.train import TrainerConfig


def decay_span(cfg: TrainerConfig) -> int:
    """Updates the decay lasts after the warm-up: `decay_steps`, else until `steps`."""
    return cfg.decay_steps if cfg.decay_steps is not None else max(cfg.steps - cfg.warmup_steps, 1)


def lr_at(step: int, cfg: TrainerConfig) -> float:
    """Learning rate of update `step` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    progress = min((step - cfg.warmup_steps) / decay_span(cfg), 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.decay == "cosine" else 1 - progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * shape


def warmup_warning(cfg: TrainerConfig) -> str | None:
    """A warm-up that lasts the whole run, or None: the learning rate never reaches `lr` (or only at the last
    update) and never decays. The mark of a run shortened with `trainer.steps` alone, under a group whose warm-up
    is long (train-clip's 2,000 updates: `trainer.steps=6` trained at 1.5e-6 for a 5e-4 peak)."""
    if cfg.warmup_steps < cfg.steps:
        return None
    return (f"trainer.warmup_steps={cfg.warmup_steps} >= trainer.steps={cfg.steps}: the whole run is warm-up, ending at "
            f"lr {lr_at(cfg.steps - 1, cfg):.3g} of trainer.lr={cfg.lr:g}, with no decay; lower trainer.warmup_steps")


def resume_warning(saved: TrainerConfig, now: TrainerConfig, step: int) -> str | None:
    """A resume at update `step` whose learning rate differs from the one the run's saved config gives there, or
    None. `trainer.steps` may change at a resume (to train on, or to stop sooner), and with `decay_steps` unset the
    decay lasts until `steps`: a run of 100,000 updates resumed with `trainer.steps=220` jumped from 1e-3 to 1e-4
    in one update, in silence. `trainer.decay_steps` set to the old span keeps the old curve."""
    before, after = lr_at(step, saved), lr_at(step, now)
    if math.isclose(before, after, rel_tol=1e-6):
        return None
    changed = ", ".join(f"trainer.{key}={getattr(saved, key)} there, {getattr(now, key)} now"
                        for key in ("steps", "decay_steps", "warmup_steps", "decay", "lr", "min_lr")
                        if getattr(saved, key) != getattr(now, key))
    return (f"the learning rate at step {step}, where the run resumes, is {after:.3g} now and {before:.3g} on the "
            f"curve it trained on ({changed}): the schedule changes from here; add "
            f"trainer.decay_steps={decay_span(saved)} to keep the old curve")


def scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_at`; the optimizer's base lr must be cfg.lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)


def rejoin(scheduler: torch.optim.lr_scheduler.LambdaLR | None) -> None:
    """Put a just-loaded scheduler's optimizer on this run's curve at the step it resumes from.

    A checkpoint restores the optimizer's learning rate as the saving run left it, computed from that run's
    config; the curve here is recomputed only at the next `step()`. A rerun that changed the curve (more
    `trainer.steps`, which resume allows) took its first update at the old curve's rate: the end of a finished
    cosine, often `min_lr` (0 for CLIP), so that update did nothing.
    """
    if scheduler is None:
        return
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


SCHEDULE = ("steps", "decay_steps", "warmup_steps", "decay", "lr", "min_lr")
"""The trainer keys the learning-rate curve reads (`lr_at`). Each checkpoint's manifest records them
(`schedule`, checkpoint_save.py): the curve that checkpoint trained on, which run.json does not tell, as it holds the
config of the latest start, and a start that changed trainer.steps and crashed before a save trained on nothing."""


def schedule_of(trainer) -> dict[str, Any]:
    """The SCHEDULE keys of TrainerConfig `trainer`, as a checkpoint's manifest records them."""
    return {key: getattr(trainer, key) for key in SCHEDULE}


def schedule_warning(path: Path, checkpoint: Path, now) -> str | None:
    """`resume_warning` for a run in `path` resuming from `checkpoint` under TrainerConfig `now`: against
    the curve the checkpoint recorded (SCHEDULE), or, for one saved before that record, the trainer config of
    `path`'s run.json (the latest start's), read before the run writes its own."""
    from megadalle.train.checkpoint import MANIFEST
    from megadalle.train.rundir import RUN_JSON

    manifest = json.loads((checkpoint / MANIFEST).read_text())
    trained = manifest.get("schedule")
    if trained is None and (path / RUN_JSON).is_file():
        trained = json.loads((path / RUN_JSON).read_text()).get("config", {}).get("trainer")
    if not (isinstance(trained, dict) and isinstance(manifest.get("step"), int)):
        return None
    known = {f.name for f in dataclasses.fields(TrainerConfig)}
    return resume_warning(TrainerConfig(**{k: v for k, v in trained.items() if k in known}), now, manifest["step"])
