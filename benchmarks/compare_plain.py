"""The trainer's step beside a plain PyTorch loop: what the framework costs (`train_step.py --compare-plain`).

For each task (Transformer, dVAE, CLIP at their `tiny` configs) both sides start from the same
seed, so the same initial weights, and run the same work per update on the same fixed batch with
the same threads: the task's loss, backward, gradient clipping at `grad_clip`, the trainer's own AdamW
(engine.optimizer: its parameter groups, fused as the trainer's is), the trainer's LR schedule, and
reading the loss (as any loop that logs does). The trainer side is megadalle's real path: engine.build
(deepspeed.initialize, ZeRO-1 by default, or stage 0 as the single-process demo runs) and StepRunner.update.
Equal losses step by step (checked in tests/eval/test_compare_plain.py) show the two do the same work, so
the ratio of their samples/s is the framework's overhead (target >= 0.9x).
Rounds alternate trainer and plain and the best round of each counts, which damps a shared
machine's noise; state the load average beside any figure.
"""
from __future__ import annotations

import functools
import itertools
import time
from typing import Any

import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed, engine, schedule
from megadalle.train.steps import StepRunner
from megadalle.train.task import Batch, DataPart, ExportSpec, Task

TASKS = ("transformer", "dvae", "clip")


class FixedBatch(Task):
    """`task` reading one fixed batch forever (no data loading in either side's time)."""

    def __init__(self, task: Task, batch: Batch):
        self.task, self.batch, self.name = task, batch, task.name

    def build_model(self):
        return self.task.build_model()

    def batches(self, start_step: int, part: DataPart):
        return itertools.repeat(self.batch)

    def loss(self, model, batch: Batch, step: int):
        return self.task.loss(model, batch, step)

    def export_spec(self) -> ExportSpec:
        return self.task.export_spec()


def task_and_batch(name: str, micro_batch: int) -> tuple[Task, Batch]:
    """A task at its tiny config and a random batch of `micro_batch` samples for it."""
    g = torch.Generator().manual_seed(1)
    if name == "transformer":
        from megadalle.config.model import TransformerConfig
        from megadalle.train.transformer import TransformerTask
        cfg = build(TransformerConfig, compose("train", ["model=tiny"]).model, "model")
        return TransformerTask(cfg, None), {
            "text": torch.randint(1, cfg.text_vocab, (micro_batch, cfg.text_len), generator=g),
            "image": torch.randint(0, cfg.image_vocab, (micro_batch, cfg.grid_len), generator=g)}
    if name == "dvae":
        from megadalle.config.dvae import DVAEConfig
        from megadalle.train.dvae import DVAETask
        cfg = build(DVAEConfig, compose("train-dvae", ["dvae=tiny"]).dvae, "dvae")
        return DVAETask(cfg, None), {"image": torch.rand(micro_batch, 3, cfg.image_size, cfg.image_size, generator=g)}
    if name == "clip":
        from megadalle.config.clip import ClipConfig
        from megadalle.train.clip import ClipTask
        cfg = build(ClipConfig, compose("train-clip", ["clip=tiny"]).clip, "clip")
        return ClipTask(cfg, None, None), {
            "image": torch.rand(micro_batch, 3, cfg.image_size, cfg.image_size, generator=g),
            "text": torch.randint(1, cfg.text_vocab, (micro_batch, cfg.text_len), generator=g),
            "sample": torch.arange(micro_batch)}  # the loader's sample ids: no repeats
    raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")


def trainer_config(micro_batch: int, steps: int) -> TrainerConfig:
    return TrainerConfig(steps=steps, micro_batch=micro_batch, warmup_steps=2, lr=1e-3, min_lr=1e-4,
                         checkpoint_every=0, grad_clip=4.0, ema=None)


def trainer_losses(name: str, micro_batch: int, steps: int, zero_stage: int = 1) -> tuple[list[float], list[float]]:
    """(losses, seconds) of `steps` updates through megadalle's trainer path at `zero_stage`."""
    task, batch = task_and_batch(name, micro_batch)
    distributed.init(distributed.detect())  # idempotent: a one-process group, as the trainer has
    torch.manual_seed(0)
    built = engine.build(FixedBatch(task, batch), trainer_config(micro_batch, steps),
                         DeepSpeedConfig(zero_stage=zero_stage), world_size=1)
    runner = StepRunner(built.engine.module.task, built, DataPart(micro_batch, 1, 0, 1), 0)
    losses, seconds = [], []
    for step in range(steps):
        began = time.perf_counter()
        losses.append(runner.update(step)["loss"])
        seconds.append(time.perf_counter() - began)
    return losses, seconds


def plain_losses(name: str, micro_batch: int, steps: int) -> tuple[list[float], list[float]]:
    """(losses, seconds) of the same updates in a plain PyTorch loop."""
    task, batch = task_and_batch(name, micro_batch)
    cfg = trainer_config(micro_batch, steps)
    torch.manual_seed(0)
    model = task.build_model()
    opt = engine.optimizer(model, cfg)
    lr = schedule.scheduler(opt, cfg)
    losses, seconds = [], []
    for step in range(steps):
        began = time.perf_counter()
        loss, _ = task.loss(model, batch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        lr.step()
        losses.append(loss.item())
        seconds.append(time.perf_counter() - began)
    return losses, seconds


def compare(name: str, micro_batch: int, steps: int, warmup: int, rounds: int = 2,
            zero_stage: int = 1) -> dict[str, Any]:
    """Samples/s of both sides (best round, after `warmup` untimed updates each) and their ratio."""
    best = {"trainer": float("inf"), "plain": float("inf")}
    sides = (("trainer", functools.partial(trainer_losses, zero_stage=zero_stage)), ("plain", plain_losses))
    for _ in range(rounds):
        for side, run in sides:
            _, seconds = run(name, micro_batch, warmup + steps)
            best[side] = min(best[side], sum(seconds[warmup:]) / steps)
    trainer_rate, plain_rate = micro_batch / best["trainer"], micro_batch / best["plain"]
    return {"task": name, "micro_batch": micro_batch, "zero_stage": zero_stage, "steps": steps,
            "threads": torch.get_num_threads(),
            "trainer_samples_per_s": trainer_rate, "plain_samples_per_s": plain_rate,
            "ratio": trainer_rate / plain_rate}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | micro batch | ZeRO stage | threads | trainer samples/s | plain samples/s | ratio |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['micro_batch']} | {r['zero_stage']} | {r['threads']} | "
              f"{r['trainer_samples_per_s']:.1f} | {r['plain_samples_per_s']:.1f} | {r['ratio']:.2f}x |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit("compare_plain.py is the library of `python benchmarks/train_step.py --compare-plain`; run that")
