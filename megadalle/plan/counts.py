"""Parameters of the model (exact, from a build on the meta device) and of each pipeline stage."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from megadalle.config.model import TransformerConfig


@dataclass(frozen=True)
class Counts:
    """Parameters of the model, from a build on the meta device (exact, no memory used)."""

    total: int
    embed: int
    head: int
    block: int
    """Parameters of one Transformer block (the unit ZeRO-3 gathers and zero.Init builds at a time)."""
    numels: tuple[int, ...]
    """Every parameter's element count (ZeRO-3 keeps those under its persistence threshold whole)."""
    largest: int
    """Elements of the largest tensor (export converts one tensor at a time)."""
    block_largest: int
    """Elements of a block's largest tensor."""
    matrices: int
    """Elements of the parameters with two or more dimensions: AdamW's decay group (train/engine.param_groups),
    one of the two groups ZeRO-1/2 flatten, each into one buffer."""


def count_parameters(cfg: TransformerConfig) -> Counts:
    from megadalle.models.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    numels = tuple(p.numel() for p in model.parameters())
    size = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return Counts(sum(numels), size(model.embed), size(model.head), size(model.blocks[0]), numels, max(numels),
                  max(p.numel() for p in model.blocks[0].parameters()),
                  sum(p.numel() for p in model.parameters() if p.dim() >= 2))


def stage_layers(cfg: TransformerConfig, pipeline: int, stage: int) -> int:
    """Blocks of pipeline stage `stage` when blocks are balanced (the first stages take the remainder)."""
    return cfg.n_layers // pipeline + (1 if stage < cfg.n_layers % pipeline else 0)


def stage_parameters(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int) -> int:
    """Parameters of pipeline stage `stage` (embeddings on the first, head on the last)."""
    return (stage_layers(cfg, pipeline, stage) * counts.block + (counts.embed if stage == 0 else 0)
            + (counts.head if stage == pipeline - 1 else 0))


def stage_largest(counts: Counts, pipeline: int, stage: int) -> int:
    """Elements of the stage's largest tensor (the embeddings and head are on the first and last stages)."""
    return counts.largest if stage in (0, pipeline - 1) else counts.block_largest


def waiting_gradient(counts: Counts, bucket: int) -> int:
    """Elements of the second-largest tensor above the reduce bucket (0 when fewer than two are).

    ZeRO-2/3 reduce a tensor larger than the bucket alone, when the next gradient's hook fires
    (stage_1_and_2's `extra_large_param_to_reduce`, stage3's bucket of one): its whole gradient waits while
    the next one is computed, so two such gradients can be live at once, the largest and this one."""
    above = sorted((n for n in counts.numels if n > bucket), reverse=True)
    return above[1] if len(above) > 1 else 0
