"""Media while training: the task's pictures as PNG files in the run directory and as wandb images.

A task's `media(model, step)` returns values to log; a `Picture` (a uint8 HWC array and a caption)
is written by `MediaFiles` as `<run>/<name>/step_<updates done, 8 digits>.png` (as the checkpoints
count) and logged to wandb as `wandb.Image`. `collect` calls the task: in eval mode under no_grad
on every rank (ZeRO-3's hooks gather parameters collectively), or, with a pipeline, after
broadcasting each stage's layers from the stage that trains them into every rank's plain model
(which was built whole on every rank: no extra memory), on rank 0 alone, since sampling needs the
whole model and a pipeline has no stage that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from megadalle.train.callbacks import Callback, RunInfo
from megadalle.train.engine import Built
from megadalle.train.task import Task


@dataclass
class Picture:
    """An image to log: `array` uint8 [H, W, 3], with a caption for wandb."""

    array: np.ndarray
    caption: str = ""

    def to_wandb(self):
        import wandb

        return wandb.Image(self.array, caption=self.caption)


def picture_path(run_dir: Path, name: str, step: int) -> Path:
    """Where the picture `name` of update index `step` (0-based) goes."""
    return Path(run_dir) / name / f"step_{step + 1:08d}.png"


class MediaFiles(Callback):
    """Rank 0 writes every Picture the task returns as a PNG in the run directory."""

    def __init__(self):
        self.run_dir: Path | None = None

    def start(self, info: RunInfo) -> None:
        self.run_dir = info.run_dir if info.rank == 0 else None

    def media(self, step: int, values: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        for name, value in values.items():
            if isinstance(value, Picture):
                path = picture_path(self.run_dir, name, step)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(value.array).save(path)


def gather_pipeline_weights(built: Built) -> None:
    """Copy every pipeline layer's parameters and buffers from its stage (data-parallel index 0) into the plain
    model on every rank (collective: every rank calls it)."""
    module, grid = built.engine.module, built.engine.grid
    built.model.to(built.dtype)  # layers of other stages are still in the build dtype
    for index, layer in enumerate(built.pipeline.layers):
        source = grid.stage_to_global(stage_id=module.stage_owner(index), data=0)
        for tensor in [*layer.parameters(), *layer.buffers()]:
            torch.distributed.broadcast(tensor.data, src=source)


def collect(task: Task, built: Built, step: int, rank: int) -> dict[str, Any]:
    """The task's media at `step` (this rank's; empty on ranks other than 0 under a pipeline)."""
    if built.pipeline is not None:
        gather_pipeline_weights(built)
        if rank != 0:
            return {}
    model = built.model
    model.eval()
    try:
        with torch.no_grad():
            return task.media(model, step)
    finally:
        model.train()
