"""What besides the layout decides memory and communication: precision, EMA, DeepSpeed's buffer sizes
and whether gradient reduction overlaps the backward, as `train` would run them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig, check_bf16_layout
from megadalle.plan.counts import Counts
from megadalle.plan.layout import Layout
from megadalle.plan.precision import BF16, FP32, GB, Precision

PREFETCH_DEFAULT, MAX_LIVE_DEFAULT, REUSE_DEFAULT, PERSISTENCE_DEFAULT = int(5e7), int(1e9), int(1e9), int(1e5)
SUB_GROUP_DEFAULT = int(1e12)
"""DeepSpeed 0.19's ZeRO-3 defaults: stage3_prefetch_bucket_size, stage3_max_live_parameters,
stage3_max_reuse_distance, stage3_param_persistence_threshold, sub_group_size."""


@dataclass(frozen=True)
class Settings:
    """What besides the layout decides memory: precision, EMA and DeepSpeed's buffer sizes."""

    precision: Precision = BF16
    ema: bool = False
    overlap_comm: bool = False
    reduce_bucket: int = int(5e7)
    prefetch_bucket: int = PREFETCH_DEFAULT
    max_live: int = MAX_LIVE_DEFAULT
    max_reuse: int = REUSE_DEFAULT
    persistence: int = PERSISTENCE_DEFAULT
    sub_group: int = SUB_GROUP_DEFAULT
    """Elements of a ZeRO-3 optimizer sub-group (DeepSpeed's sub_group_size)."""
    runtime: float = 0.0
    """Bytes of the device runtime (CUDA context, NCCL); 0 for host memory above the baseline."""


def overlaps(layout: Layout, settings: Settings) -> bool:
    """Whether gradient reduction overlaps the backward: DeepSpeed's pipeline engine cannot (engine.ds_config)."""
    return settings.overlap_comm and layout.pipeline == 1


def settings_for(trainer: TrainerConfig, ds: DeepSpeedConfig, plan: PlanConfig, counts: Counts) -> Settings:
    """The Settings `train` would run with: its precision rule, EMA, DeepSpeed's buckets and ZeRO-3's
    window of `ds.zero3_window_blocks` blocks and sub-groups of `ds.zero3_sub_group_blocks` (train/engine.py's
    zero3_limits; extra included)."""
    zero = ds.extra.get("zero_optimization", {})
    window, sub_group = ds.zero3_window(counts.block), ds.zero3_sub_group(counts.block)
    precision = {"fp32": FP32, "bf16": BF16}.get(trainer.precision, BF16 if plan.device == "gpu" else FP32)
    if precision is BF16:  # a layout `train` refuses, refused (plan said it fits)
        check_bf16_layout(ds)
    if precision is BF16 and ds.grad_accum_dtype != "fp32":
        precision = dataclasses.replace(BF16, grad=2)
    return Settings(
        precision=precision, ema=trainer.ema is not None,
        overlap_comm=bool(zero.get("overlap_comm", ds.overlap_comm)),
        reduce_bucket=int(zero.get("reduce_bucket_size", ds.reduce_bucket_size)),
        prefetch_bucket=int(zero.get("stage3_prefetch_bucket_size", PREFETCH_DEFAULT)),
        max_live=int(zero.get("stage3_max_live_parameters", window or MAX_LIVE_DEFAULT)),
        max_reuse=int(zero.get("stage3_max_reuse_distance", window or REUSE_DEFAULT)),
        persistence=int(zero.get("stage3_param_persistence_threshold", PERSISTENCE_DEFAULT)),
        sub_group=int(zero.get("sub_group_size", sub_group or SUB_GROUP_DEFAULT)),
        runtime=plan.runtime_gb * GB if plan.device == "gpu" else 0.0)
