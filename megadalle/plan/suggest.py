"""The layout to suggest: of those the GPUs and the global batch allow, the fastest that fits."""
from __future__ import annotations

from megadalle.config import ConfigError
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.plan.counts import Counts
from megadalle.plan.layout import Layout, PlanError
from megadalle.plan.memory import budget, memory_per_rank
from megadalle.plan.precision import GB
from megadalle.plan.settings import Settings
from megadalle.plan.timing import step_time


def candidate_layouts(cfg: TransformerConfig, plan: PlanConfig):
    for pp in (p for p in range(1, plan.gpus + 1) if plan.gpus % p == 0 and p <= cfg.n_layers):
        dp = plan.gpus // pp
        for zero in ((1, 2, 3) if pp == 1 else (1,)):
            for mb in (1, 2, 4, 8, 16):
                if plan.global_batch % (dp * mb):
                    continue
                for ckpt in (False, True):
                    yield Layout(pp, dp, zero, mb, ckpt, plan.global_batch // (dp * mb))


def largest_pipeline(cfg: TransformerConfig, plan: PlanConfig) -> int:
    """The most pipeline stages `plan.gpus` allows: the fewest data-parallel ranks the global batch must feed."""
    return max(p for p in range(1, plan.gpus + 1) if plan.gpus % p == 0 and p <= cfg.n_layers)


def suggest(cfg: TransformerConfig, plan: PlanConfig, counts: Counts, settings: Settings) -> Layout:
    """The fastest layout that fits with the headroom kept; ties go to less sharding (less communication)."""
    layouts = list(candidate_layouts(cfg, plan))
    if not layouts:
        raise PlanError(
            f"no layout of {plan.gpus} GPUs splits global_batch={plan.global_batch}: the data-parallel ranks (GPUs "
            f"/ pipeline stages, at most n_layers={cfg.n_layers} stages) times a micro-batch of 1 to 16 must divide "
            f"it; make global_batch a multiple of {plan.gpus // largest_pipeline(cfg, plan)}, or use another number "
            f"of GPUs")
    if settings.runtime >= budget(plan):
        raise ConfigError(f"runtime_gb={settings.runtime / GB:g}: the CUDA context and NCCL leave nothing of the "
                          f"{budget(plan) / GB:.1f} GB usable per GPU ({plan.gpu_mem_gb:g} GB, {plan.headroom:.0%} "
                          f"headroom)")
    fits = [lay for lay in layouts if memory_per_rank(cfg, counts, lay, settings).total <= budget(plan)]
    if not fits:
        floor = 16 * counts.total / plan.gpus / GB
        raise PlanError(
            f"{counts.total / 1e9:.2f}B parameters do not fit on {plan.gpus} x {plan.gpu_mem_gb:g} GB: "
            f"even fully sharded "
            f"(ZeRO-3, micro-batch 1, activation checkpointing) weights, gradients and Adam states alone take "
            f"{floor:.1f} GB per GPU (16 B/param / {plan.gpus} GPUs) of {budget(plan) / GB:.1f} GB usable "
            f"({plan.headroom:.0%} headroom), before activations; use more GPUs, GPUs with more memory, "
            f"or a smaller model")
    return min(fits, key=lambda lay: (round(step_time(cfg, counts, plan, lay, settings).total, 6), lay.zero,
                                      lay.pipeline, -lay.micro_batch))
