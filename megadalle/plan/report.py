"""The `megadalle plan` verb: the report for a config (its memory, step time, checkpoint and USR1 lead),
the other layouts beside it and the suggested one."""
from __future__ import annotations

import dataclasses
import sys

from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.flops import transformer_flops_per_token
from megadalle.plan.checkpoint import checkpoint_bytes, export_bytes, usr1_lead_seconds
from megadalle.plan.counts import Counts, count_parameters
from megadalle.plan.layout import Layout, PlanError, describe, layout_for, train_overrides
from megadalle.plan.memory import Memory, budget, construction_bytes, memory_per_rank
from megadalle.plan.precision import GB
from megadalle.plan.sampling import sampling_line
from megadalle.plan.settings import Settings, settings_for
from megadalle.plan.suggest import suggest
from megadalle.plan.timing import step_time

PIECES_HINT_SAVING = 0.05
MEMORY_COLUMNS = ("weights", "grads", "optimizer", "ema", "buffers", "activations", "step", "swap", "runtime")


def memory_row(name: str, mem: Memory, fits: str) -> str:
    columns = "".join(f"{getattr(mem, c) / GB:>8.2f}" for c in MEMORY_COLUMNS)
    return f"  {name:<58}{columns}{mem.total / GB:>8.2f}  {fits}"


def memory_header(plan: PlanConfig) -> str:
    where = "host memory per rank above the baseline" if plan.device == "cpu" else \
        f"memory per GPU, fits = total <= {budget(plan) / GB:.1f} GB ({plan.gpu_mem_gb:g} GB less " \
        f"{plan.headroom:.0%} headroom)"
    return f"{where}, GB:\n  {'layout':<58}" + "".join(f"{c[:7]:>8}" for c in MEMORY_COLUMNS) + f"{'total':>8}"


def config_lines(model: TransformerConfig, counts: Counts, plan: PlanConfig, layout: Layout,
                 settings: Settings) -> list[str]:
    """The prediction for the config as given: memory, step time, checkpoint and USR1 lead time."""
    mem = memory_per_rank(model, counts, layout, settings, plan.device)
    fits = "" if plan.device == "cpu" else ("fits" if mem.total <= budget(plan) else "DOES NOT FIT")
    busiest, total = checkpoint_bytes(model, counts, layout, settings)
    checkpoint = f"  checkpoint: {total / GB:.1f} GB in all, {busiest / GB:.2f} GB from the busiest rank; at " \
                 f"{plan.checkpoint_write_gbps:g} GB/s "
    if plan.device == "cpu":  # the step time is a GPU's (MFU, NVLink): 0.00 s on the CPU, and the lead sized on it
        timing = ["  step: not predicted on the CPU (the model of it is a GPU's); metrics.jsonl's step_seconds "
                  "measures it",
                  f"{checkpoint}submit with sbatch --signal=B:USR1@N, N = 1.5 x (step_seconds + "
                  f"{total / (plan.checkpoint_write_gbps * GB):.1f} s) + 30"]
    else:
        t = step_time(model, counts, plan, layout, settings)
        timing = [f"  step: {t.total:.2f} s = compute {t.compute:.2f} s + exposed communication {t.exposed:.2f} s "
                  f"(of {t.comm:.2f} s; NVLink {plan.nvlink_gbps:g} GB/s within {plan.gpus_per_node} ranks, "
                  f"InfiniBand {plan.ib_gbps:g} GB/s across)",
                  f"{checkpoint}submit with sbatch --signal=B:USR1@{usr1_lead_seconds(t.total, total, plan)}"]
    return [
        f"this config ({plan.gpus} ranks, {settings.precision.name}, EMA {'on' if settings.ema else 'off'}): "
        f"{describe(layout)}",
        memory_header(plan), memory_row("as configured", mem, fits),
        *stage0_hint(model, counts, plan, layout, settings, mem),
        *pieces_hint(model, counts, plan, layout, settings, mem),
        f"  construction peak (before the first step): "
        f"{construction_bytes(model, counts, layout, settings, plan.device) / GB:.2f} GB",
        *timing,
        f"  export (streaming, bf16): peak {export_bytes(counts) / GB:.2f} GB",
        *([] if plan.device == "cpu" else [sampling_line(model, counts, plan)]),
    ]


def needs(alone: Memory, mem: Memory) -> str:
    """A hint's figure: what the alternative holds per rank and how much less than the config as given."""
    return f"needs {alone.total / GB:.2f} GB per rank ({(mem.total - alone.total) / GB:.2f} GB less)"


def stage0_hint(model: TransformerConfig, counts: Counts, plan: PlanConfig, layout: Layout, settings: Settings,
                mem: Memory) -> list[str]:
    """ZeRO-1 or 2 over a single data-parallel rank (a pipeline whose stages fill the world, or one process)
    shards nothing and keeps a master copy and reduction buffers besides: the memory of stage 0, where
    DeepSpeed allows it (not bf16 accumulated in fp32)."""
    if layout.data_parallel != 1 or layout.zero not in (1, 2) or (settings.precision.name == "bf16"
                                                                   and settings.precision.grad == 4):
        return []
    alone = memory_per_rank(model, counts, dataclasses.replace(layout, zero=0), settings, plan.device)
    return [f"  one data-parallel rank: ZeRO-{layout.zero} shards nothing here; deepspeed.zero_stage=0 "
            f"{needs(alone, mem)}"]


def pieces_hint(model: TransformerConfig, counts: Counts, plan: PlanConfig, layout: Layout, settings: Settings,
                mem: Memory) -> list[str]:
    """Where a vocabulary table is the largest tensor, what cutting the tables into pieces no larger than a
    block's largest matrix would hold (model.vocab_chunk): the largest tensor sets what is gathered, computed
    and reduced at once. Said where it saves at least PIECES_HINT_SAVING of the rank's memory."""
    if counts.largest <= counts.block_largest:
        return []
    rows = max(counts.block_largest // model.d_model, 1)
    pieced = dataclasses.replace(model, vocab_chunk=rows)
    alone = memory_per_rank(pieced, count_parameters(pieced), layout, settings, plan.device)
    if mem.total - alone.total < PIECES_HINT_SAVING * mem.total:
        return []
    return [f"  the vocabulary tables are the largest tensors ({counts.largest:,} elements, a block's largest "
            f"{counts.block_largest:,}): model.vocab_chunk={rows} {needs(alone, mem)}"]


def report(model: TransformerConfig, plan: PlanConfig, trainer: TrainerConfig, ds: DeepSpeedConfig) -> str:
    counts = count_parameters(model)
    settings = settings_for(trainer, ds, plan, counts)
    fpt = transformer_flops_per_token(model)
    lines = [
        f"parameters: {counts.total:,} ({counts.total / 1e9:.2f}B; embeddings {counts.embed / 1e6:.1f}M, "
        f"head {counts.head / 1e6:.1f}M, {counts.block / 1e6:.1f}M per block)",
        f"sequence: {model.text_len} text + {model.grid_len} image = {model.seq_len} tokens; layers: {model.n_layers}, "
        f"d_model {model.d_model}, {model.n_heads} heads x {model.head_dim}",
        f"training FLOPs per token: {fpt / 1e9:.4g} GFLOP (forward + backward, sparse attention counted as masked)",
        "", *config_lines(model, counts, plan, layout_for(model, trainer, ds, plan), settings),
    ]
    if plan.device == "cpu":
        return "\n".join(lines)
    accum = max(plan.global_batch // plan.gpus, 1)
    rows = [(f"ZeRO-{z} (dp {plan.gpus})", Layout(1, plan.gpus, z, 1, True, accum)) for z in (1, 2, 3)]
    rows += [(f"pipeline {pp} x dp {plan.gpus // pp} (ZeRO-1)", Layout(pp, plan.gpus // pp, 1, 1, True, accum * pp))
             for pp in (2, 4, 8, 16, 32) if plan.gpus % pp == 0 and pp <= model.n_layers]
    lines += ["", f"other layouts at micro-batch 1 with activation checkpointing, {batch_line(plan, accum)}:",
              memory_header(plan)]
    for name, lay in rows:
        mem = memory_per_rank(model, counts, lay, settings)
        lines.append(memory_row(name, mem, "yes" if mem.total <= budget(plan) else "no"))
    best = suggest(model, plan, counts, settings)
    mem = memory_per_rank(model, counts, best, settings)
    t = step_time(model, counts, plan, best, settings)
    lead = usr1_lead_seconds(t.total, checkpoint_bytes(model, counts, best, settings)[1], plan)
    lines += [
        "",
        f"suggested layout: {describe(best)}: {mem.total / GB:.1f} GB per GPU of {budget(plan) / GB:.1f} usable",
        f"estimated step time: {t.total:.2f} s (compute {t.compute:.2f} s at MFU {plan.assumed_mfu:.0%}"
        f"{', x 4/3 recompute' if best.checkpointing else ''}"
        f"{f', x (1 + {best.pipeline - 1}/{best.grad_accum}) pipeline bubble' if best.pipeline > 1 else ''}"
        f"; exposed communication {t.exposed:.2f} s); {plan.global_batch * model.seq_len / t.total:,.0f} tokens/s",
        f"launch with: megadalle train {train_overrides(model, trainer, ds, best)}",
        f"  (Slurm: sbatch {slurm_resources(plan)} --signal=B:USR1@{lead} launch/slurm/train.sbatch "
        f"{train_overrides(model, trainer, ds, best)} ...)",
    ]
    return "\n".join(lines)


def batch_line(plan: PlanConfig, accum: int) -> str:
    """The sequences per step of the other layouts, every one `plan.gpus` x `accum` micro-batches of 1: the global
    batch only where the ranks divide it (the header stated it above rows of another batch)."""
    sequences = plan.gpus * accum
    if sequences == plan.global_batch:
        return f"{sequences} sequences per step"
    why = (f"more ranks than global_batch={plan.global_batch}" if plan.gpus > plan.global_batch
           else f"global_batch={plan.global_batch} is not a multiple of {plan.gpus}")
    return f"{sequences} sequences per step ({plan.gpus} ranks x {accum}: {why})"


def slurm_resources(plan: PlanConfig) -> str:
    """sbatch's options for the planned world size: launch/slurm/train.sbatch's defaults (2 nodes x 8) would
    otherwise set it, and with it the global batch."""
    per_node = min(plan.gpus, plan.gpus_per_node)
    nodes = -(-plan.gpus // per_node)
    tasks = f"--ntasks-per-node={per_node}" if plan.gpus % per_node == 0 else f"--ntasks={plan.gpus}"
    return f"--nodes={nodes} {tasks} --gpus-per-node={per_node}"


def run(cfg: DictConfig) -> int:
    model = build(TransformerConfig, cfg.model, "model")
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    ds = build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    plan = build(PlanConfig, top_level(cfg, PlanConfig), "")
    try:
        print(report(model, plan, trainer, ds))
    except PlanError as err:
        print(f"megadalle plan: impossible: {err}", file=sys.stderr)  # exit 1: a script reading stderr hears it
        return 1
    return 0
