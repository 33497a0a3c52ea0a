"""Seconds per optimizer step: compute, and the communication the overlap leaves exposed.

Step time is compute at an assumed MFU (x 4/3 with recompute, x the pipeline bubble) plus the
communication left exposed: ring collectives at NVLink bandwidth inside a node and InfiniBand across
nodes, with overlap_comm hiding at most the backward's compute.
"""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.flops import transformer_flops_per_token
from megadalle.plan.counts import Counts, stage_parameters
from megadalle.plan.layout import Layout
from megadalle.plan.precision import GB
from megadalle.plan.settings import Settings, overlaps


@dataclass(frozen=True)
class StepTime:
    compute: float
    comm: float
    exposed: float

    @property
    def total(self) -> float:
        return self.compute + self.exposed


def ring_seconds(volume: float, ranks: int, plan: PlanConfig) -> float:
    """One all-gather or reduce-scatter of `volume` bytes over `ranks` ranks (an all-reduce is two)."""
    if ranks <= 1:
        return 0.0
    bandwidth = (plan.nvlink_gbps if ranks <= plan.gpus_per_node else plan.ib_gbps) * GB
    return volume * (ranks - 1) / ranks / bandwidth


def gathers(counts: Counts, layout: Layout, settings: Settings) -> int:
    """All-gathers of the weights per ZeRO-3 micro-batch: forward and backward, and a third for the
    recomputation unless a block stays gathered from its recomputation to its backward. A parameter's
    next use there lies at most two blocks' parameters ahead in DeepSpeed's trace (the rest of the block
    recomputed, then its backward), which train's default window (stage3_max_reuse_distance of two
    blocks) and DeepSpeed's 1e9 at the 12B both cover."""
    return 3 if layout.checkpointing and settings.max_reuse < 2 * counts.block else 2


def step_time(cfg: TransformerConfig, counts: Counts, plan: PlanConfig, layout: Layout, settings: Settings) -> StepTime:
    """Seconds per optimizer step: compute at the assumed MFU plus the communication overlap leaves exposed."""
    prec, dp, pp = settings.precision, layout.data_parallel, layout.pipeline
    batch = layout.micro_batch * layout.grad_accum * dp
    flops = transformer_flops_per_token(cfg) * batch * cfg.seq_len
    compute = flops / (plan.gpus * plan.peak_tflops * 1e12 * plan.assumed_mfu)
    if layout.checkpointing:
        compute *= 4 / 3  # one extra forward
    compute *= 1 + (pp - 1) / layout.grad_accum
    p = stage_parameters(counts, cfg, pp, 0, layout.partition)
    reduce = ring_seconds(prec.grad * p, dp, plan)
    gather = ring_seconds(prec.weight * p, dp, plan)
    if layout.zero >= 3:  # gather for forward and backward, reduce-scatter, every micro-batch
        comm = layout.grad_accum * (gathers(counts, layout, settings) * gather + reduce)
    elif layout.zero == 2:  # reduce-scatter every micro-batch, all-gather of the updated weights once
        comm = layout.grad_accum * reduce + gather
    else:  # reduce once per step at the boundary (all-reduce below ZeRO-1), all-gather once
        comm = reduce + gather if layout.zero == 1 else 2 * reduce
    if pp > 1:  # activations forward and gradients backward across each stage boundary, per micro-batch
        boundary = cfg.seq_len * layout.micro_batch * cfg.d_model * prec.act
        cross = plan.ib_gbps if dp >= plan.gpus_per_node else plan.nvlink_gbps
        comm += 2 * layout.grad_accum * boundary / (cross * GB)
    hidden = compute * 2 / 3 if overlaps(layout, settings) or layout.zero >= 3 else 0.0
    return StepTime(compute, comm, max(comm - hidden, 0.0))
