"""The parallel layout of a run: read from `train`'s config, turned into `train` overrides, put in words."""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config import check
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.plan.counts import BY_BLOCK, PARTITIONS


class PlanError(ValueError):
    """The request cannot fit; the message says why (`plan` answers so, exit code 1). A config that contradicts
    itself is a ConfigError instead, a user error like any verb's (exit code 2)."""


@dataclass(frozen=True)
class Layout:
    pipeline: int
    data_parallel: int
    zero: int
    micro_batch: int
    checkpointing: bool
    grad_accum: int = 1
    """Micro-batches per optimizer step on each data-parallel rank."""
    partition: str = BY_BLOCK
    """How the pipeline's layers are cut into stages (deepspeed.partition_method; plan/counts.PARTITIONS)."""


def launch_overrides(layout: Layout) -> str:
    """The `megadalle train` overrides that realise `layout` (conf/deepspeed, conf/trainer)."""
    parts = [f"deepspeed=pipe deepspeed.pipeline_stages={layout.pipeline}" if layout.pipeline > 1
             else f"deepspeed=zero{layout.zero}"]
    if layout.pipeline > 1 and layout.partition != BY_BLOCK:
        parts.append(f"deepspeed.partition_method={layout.partition}")
    parts += [f"model.activation_checkpointing={str(layout.checkpointing).lower()}",
              f"trainer.micro_batch={layout.micro_batch}", f"trainer.grad_accum={layout.grad_accum}"]
    return " ".join(parts)


def layout_for(model: TransformerConfig, trainer: TrainerConfig, ds: DeepSpeedConfig, plan: PlanConfig) -> Layout:
    check(plan.gpus % ds.pipeline_stages == 0, "deepspeed.pipeline_stages", ds.pipeline_stages,
          f"does not divide gpus={plan.gpus} (each pipeline takes as many ranks as it has stages)")
    check(ds.pipeline_stages == 1 or ds.partition_method in PARTITIONS, "deepspeed.partition_method",
          ds.partition_method, f"plan models {', '.join(PARTITIONS)}")
    return Layout(ds.pipeline_stages, plan.gpus // ds.pipeline_stages, ds.zero_stage, trainer.micro_batch,
                  model.activation_checkpointing, trainer.grad_accum, ds.partition_method)


def describe(layout: Layout) -> str:
    mode = f"pipeline {layout.pipeline} x dp {layout.data_parallel} (ZeRO-{layout.zero})" if layout.pipeline > 1 \
        else f"ZeRO-{layout.zero} (dp {layout.data_parallel})"
    checkpointing = "on" if layout.checkpointing else "off"
    return f"{mode}, micro-batch {layout.micro_batch} x {layout.grad_accum}, checkpointing {checkpointing}"
