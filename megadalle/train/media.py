"""Media while training: the task's pictures as PNG files in the run directory and as wandb images.

A task's `media(model, step)` returns values to log; a `Picture` (a uint8 HWC array and a caption)
is written by `MediaFiles` as `<run>/<name>/step_<updates done, 8 digits>.png` (as the checkpoints
count) and logged to wandb as `wandb.Image`. `collect` calls the task in eval mode under no_grad:
- on every rank, the model's parameters gathered whole under ZeRO-3 for the call (collective), its
  hooks off meanwhile. The hooks gather a module's parameters only around that module's forward, and
  sampling also reads parameters outside any forward (the image position tables, the head's image
  rows): partitioned, those are empty tensors and the first grid of a ZeRO-3 run failed;
- with a pipeline, on rank 0 alone, after each stage has sent its layers to a whole plain model that
  rank 0 builds for the grid (sampling needs the whole model and no stage holds it).
Either way one rank holds the whole model in the training dtype while the grid is drawn (24.6 GB at
the 12B in bf16); media is off unless `trainer.media_every` is set.
The pictures are of the model's weights at the call: the trainer swaps the EMA in first when the run keeps one
(train/ema_swap.py), so under a pipeline each stage sends its EMA weights, and the grids show the weights export ships.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
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


def gather_pipeline_weights(task: Task, built: Built, rank: int) -> nn.Module | None:
    """Rank 0's whole plain model holding every pipeline layer's current weights; None on other ranks.

    No rank holds the whole model under a pipeline, so rank 0 builds one for the time of one grid: on the
    meta device, then given uninitialised storage on its device in the training dtype, since every tensor is
    overwritten. Each layer comes from its stage's data-parallel rank 0, point to point (collective: every
    rank calls it). At the 12B that is 24.6 GB of bf16 on the GPU while the grid is drawn; a model built
    whole in fp32 and kept would take 49 GB of the GPU for the whole run, after initialising 12B parameters
    on the host.
    """
    module, grid = built.engine.module, built.engine.grid
    names = built.pipeline.layer_names
    media = None
    if rank == 0:
        with torch.device("meta"):
            media = task.build_model()
        media = media.to(built.dtype).to_empty(device=built.device)
        layers = {f"{name}.{key}" for name in names for key in media.get_submodule(name).state_dict()}
        outside = sorted(set(media.state_dict()) - layers)
        if outside:
            raise RuntimeError(f"the pipeline's layers do not hold {outside[:3]}: the media model would sample them "
                               "uninitialised")
    for index, name in enumerate(names):
        source = grid.stage_to_global(stage_id=module.stage_owner(index), data=0)
        if rank not in (0, source):
            continue
        local = list(built.model.get_submodule(name).state_dict().values()) if rank == source else None
        if rank == 0:
            for k, target in enumerate(media.get_submodule(name).state_dict().values()):
                if local is not None:
                    value = local[k]
                else:
                    value = torch.empty(target.shape, dtype=built.dtype if target.is_floating_point() else target.dtype,
                                        device=target.device)
                    torch.distributed.recv(value, src=source)
                target.copy_(value)
        else:
            for value in local:
                torch.distributed.send(value.detach().contiguous(), dst=0)
    return media


def collect(task: Task, built: Built, step: int, rank: int) -> dict[str, Any]:
    """The task's media at `step` (this rank's; empty on ranks other than 0 under a pipeline)."""
    model = built.model
    if built.pipeline is not None:
        model = gather_pipeline_weights(task, built, rank)
        if model is None:
            return {}
    model.eval()
    try:
        with torch.no_grad(), whole_parameters(built):
            return task.media(model, step)
    finally:
        model.train()


@contextlib.contextmanager
def whole_parameters(built: Built) -> Iterator[None]:
    """Under ZeRO-3, every parameter gathered on every rank for the block (collective) and DeepSpeed's module hooks
    off meanwhile, as DeepSpeed's `unwrap_model_for_generation` does; else nothing to do. With the hooks on, every
    module's forward at every decoded token went through ZeRO-3's fetch and release: a grid of the tiny test model
    took ~5 s instead of ~0.4 s (tests/eval/test_sample_grid.py), and at 12B a grid decodes 1,024 tokens through
    64 layers' modules."""
    if built.engine.zero_optimization_stage() != 3:
        yield
        return
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    unwrapped = unwrap_model_for_generation(built.engine)
    unwrapped.__enter__()
    try:
        yield
    finally:
        # ended as if the block had ended well, whatever ended it: DeepSpeed's context puts the hooks back only
        # then, and without them ZeRO-3 would go on training on empty partitions
        unwrapped.__exit__(None, None, None)
