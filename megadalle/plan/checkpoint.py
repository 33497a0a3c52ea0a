"""Bytes of a checkpoint and of the streaming export, and how early Slurm must warn to save one (USR1)."""
from __future__ import annotations

import math

from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.plan.counts import Counts, stage_parameters
from megadalle.plan.layout import Layout
from megadalle.plan.precision import GB, master_bytes
from megadalle.plan.settings import Settings


def checkpoint_bytes(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings) -> tuple[float, float]:
    """(busiest rank's files, all ranks' files) of one checkpoint.

    Each rank writes its optimizer partition (master + moments) and its EMA piece; below ZeRO-3 the
    first data-parallel rank of each stage writes the stage's weights as well.
    """
    prec, dp = settings.precision, layout.data_parallel
    per_param = master_bytes(prec, layout.zero) + prec.adam + (4 if settings.ema else 0)
    owned = [stage_parameters(counts, cfg, layout.pipeline, s, layout.partition) for s in range(layout.pipeline)]
    weights = [0.0 if layout.zero >= 3 else prec.weight * p for p in owned]
    busiest = max(per_param * p / dp + w for p, w in zip(owned, weights))
    return busiest, sum(per_param * p + w for p, w in zip(owned, weights))


def export_bytes(counts: Counts) -> float:
    """Streaming export (bf16) holds one tensor, whatever the model's size (its files are laid out
    first, planned_safetensors.py): at worst the largest parameter in bf16 (2 bytes per element) and
    the fp32 file pages of one piece of it (4 more when one rank's partition holds it whole)."""
    return 6 * counts.largest


def usr1_lead_seconds(step: float, checkpoint_total: float, plan: PlanConfig) -> int:
    """Seconds before the time limit Slurm should send USR1: finish a step, write a checkpoint, with
    a 1.5x margin and 30 s for the tasks to exit, rounded up to 10 s."""
    needed = 1.5 * (step + checkpoint_total / (plan.checkpoint_write_gbps * GB)) + 30
    return int(math.ceil(needed / 10) * 10)
