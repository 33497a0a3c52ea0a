"""Parameters of the model (exact, from a build on the meta device) and of each pipeline stage."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


BY_BLOCK = "type:Block"
PARTITIONS = (BY_BLOCK, "parameters", "uniform")
"""deepspeed.partition_method values plan models: blocks balanced (conf/deepspeed/pipe.yaml's default),
parameter counts balanced, or every layer (embedding, blocks, head) counted as one."""


@dataclass(frozen=True)
class Stage:
    blocks: int
    embed: bool
    head: bool


def stage_span(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int, partition: str = BY_BLOCK) -> Stage:
    """What pipeline stage `stage` holds of the pipeline's layers [embedding, blocks..., head].

    Cut where DeepSpeed's PipelineModule cuts them (`stage_cuts`): type:Block balances blocks (the first
    stages take the remainder) and lets the embedding and head ride on the first and last stage; the others
    balance parameter counts or layers. A stage beyond what the layers fill holds nothing (`unfilled_stages`)."""
    parts = stage_cuts(counts, cfg, pipeline, partition)
    start, stop, layers = parts[stage], parts[stage + 1], cfg.n_layers + 2
    blocks = sum(1 for i in range(start, stop) if 0 < i < layers - 1)
    return Stage(blocks, start == 0 < stop, start < layers == stop)


def stage_cuts(counts: Counts, cfg: TransformerConfig, pipeline: int, partition: str = BY_BLOCK) -> tuple[int, ...]:
    """The stage boundaries over [embedding, blocks..., head] as PipelineModule._partition_layers draws them
    for `partition` (DeepSpeed 0.19): type:Block balances weights of 1 per block and 0 for the embedding and
    head, parameters the layers' parameter counts, uniform the number of layers."""
    if partition not in PARTITIONS:
        raise ValueError(f"partition_method={partition!r}: plan models {', '.join(PARTITIONS)}")
    weights = (0, *[1] * cfg.n_layers, 0) if partition == BY_BLOCK else \
        (counts.embed, *[counts.block] * cfg.n_layers, counts.head)
    return _cuts(partition, weights, pipeline)


@lru_cache(maxsize=256)
def _cuts(partition: str, weights: tuple[int, ...], pipeline: int) -> tuple[int, ...]:
    """DeepSpeed's stage boundaries over the layer list (cached: the search in suggest asks often)."""
    from deepspeed.runtime.utils import partition_balanced, partition_uniform

    parts = partition_uniform(len(weights), pipeline) if partition == "uniform" else \
        partition_balanced(list(weights), pipeline)
    return tuple(int(p) for p in parts)


def unfilled_stages(counts: Counts, cfg: TransformerConfig, pipeline: int, partition: str = BY_BLOCK) -> list[int]:
    """The stages `partition` leaves without work: with no Transformer block under type:Block (which weighs the
    blocks alone, so its stages past n_layers get the embedding, the head or nothing), with no layer at all under
    the others. DeepSpeed cuts such stages without a warning: ranks that hold nothing to train."""
    spans = [stage_span(counts, cfg, pipeline, s, partition) for s in range(pipeline)]
    return [s for s, span in enumerate(spans)
            if (span.blocks == 0 if partition == BY_BLOCK else not (span.blocks or span.embed or span.head))]


def stage_layers(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int, partition: str = BY_BLOCK) -> int:
    """Blocks of pipeline stage `stage`."""
    return stage_span(counts, cfg, pipeline, stage, partition).blocks


def stage_parameters(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int,
                     partition: str = BY_BLOCK) -> int:
    """Parameters of pipeline stage `stage`."""
    span = stage_span(counts, cfg, pipeline, stage, partition)
    return span.blocks * counts.block + (counts.embed if span.embed else 0) + (counts.head if span.head else 0)


def stage_largest(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int, partition: str = BY_BLOCK) -> int:
    """Elements of the stage's largest tensor (the embeddings' and head's matrices are the largest)."""
    span = stage_span(counts, cfg, pipeline, stage, partition)
    return counts.largest if span.embed or span.head else counts.block_largest


def waiting_gradient(counts: Counts, bucket: int) -> int:
    """Elements of the second-largest tensor above the reduce bucket (0 when fewer than two are).

    ZeRO-2/3 reduce a tensor larger than the bucket alone, when the next gradient's hook fires
    (stage_1_and_2's `extra_large_param_to_reduce`, stage3's bucket of one): its whole gradient waits while
    the next one is computed, so two such gradients can be live at once, the largest and this one."""
    above = sorted((n for n in counts.numels if n > bucket), reverse=True)
    return above[1] if len(above) > 1 else 0
