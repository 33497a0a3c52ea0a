"""`megadalle plan`: will this config train on these GPUs, how long is a step, and what layout is best?

Every byte a rank holds is counted from what the code and DeepSpeed 0.19 allocate, so that the CPU
scale rehearsal (benchmarks/scale_rehearsal.py, which measures the same quantities) can check it:
- model states, per parameter of the rank's pipeline stage: weights (2 B bf16 / 4 B fp32), gradients
  (4 B: bf16 runs accumulate and reduce in fp32), DeepSpeed's fp32 master partition (4 B, cloned
  even when training in fp32) and Adam's two moments (8 B). ZeRO-1 divides master and moments by the
  data-parallel degree dp, ZeRO-2 the gradients too, ZeRO-3 the weights too;
- the EMA: fp32, sharded like the optimizer state (each rank averages what it owns: 4 B / dp);
- DeepSpeed's buffers: the gradient-reduction buckets (reduce_bucket_size elements, two of them with
  overlap_comm), and under ZeRO-3 the parameters gathered at once (the largest layer plus the
  prefetch bucket, capped by max_live_parameters) and the small parameters it never partitions
  (numel <= stage3_param_persistence_threshold);
- activations per micro-batch after Korthikanti et al. (2022): 34 * seq * batch * d_model bytes per
  layer at 2-byte precision with flash attention (twice that in fp32, plus the seq^2 scores and
  probabilities of the eager attention on CPU); with activation checkpointing only each layer's input
  plus one layer being recomputed. The first pipeline stage holds up to `stages` micro-batches (1F1B),
  the last one the logits and their fp32 cross-entropy;
- on GPU, the CUDA/NCCL runtime; and at least 10% of the memory is kept free (headroom).
Step time is compute at an assumed MFU (x 4/3 with recompute, x the pipeline bubble) plus the
communication left exposed: ring collectives at NVLink bandwidth inside a node and InfiniBand across
nodes, with overlap_comm hiding at most the backward's compute.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

import torch
from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.flops import transformer_flops_per_token

GB = 1e9
ACT_BYTES_PER_ELEMENT_LAYER_16BIT = 34
"""Korthikanti et al. (2022), Table 2 without the seq^2 attention term (flash attention keeps none)."""
PREFETCH_DEFAULT, MAX_LIVE_DEFAULT, PERSISTENCE_DEFAULT = int(5e7), int(1e9), int(1e5)
"""DeepSpeed 0.19's ZeRO-3 defaults: stage3_prefetch_bucket_size, stage3_max_live_parameters,
stage3_param_persistence_threshold."""


class PlanError(ValueError):
    """The request cannot fit; the message says why."""


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


def count_parameters(cfg: TransformerConfig) -> Counts:
    from megadalle.models.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    numels = tuple(p.numel() for p in model.parameters())
    size = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return Counts(sum(numels), size(model.embed), size(model.head), size(model.blocks[0]), numels, max(numels),
                  max(p.numel() for p in model.blocks[0].parameters()))


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter or activation element of one training precision."""

    name: str
    weight: int
    grad: int
    master: int
    adam: int
    act: int


BF16 = Precision("bf16", weight=2, grad=4, master=4, adam=8, act=2)
FP32 = Precision("fp32", weight=4, grad=4, master=4, adam=8, act=4)


@dataclass(frozen=True)
class Layout:
    pipeline: int
    data_parallel: int
    zero: int
    micro_batch: int
    checkpointing: bool
    grad_accum: int = 1
    """Micro-batches per optimizer step on each data-parallel rank."""


@dataclass(frozen=True)
class Settings:
    """What besides the layout decides memory: precision, EMA and DeepSpeed's buffer sizes."""

    precision: Precision = BF16
    ema: bool = False
    overlap_comm: bool = False
    reduce_bucket: int = int(5e7)
    prefetch_bucket: int = PREFETCH_DEFAULT
    max_live: int = MAX_LIVE_DEFAULT
    persistence: int = PERSISTENCE_DEFAULT
    runtime: float = 0.0
    """Bytes of the device runtime (CUDA context, NCCL); 0 for host memory above the baseline."""


@dataclass(frozen=True)
class Memory:
    """Bytes one rank holds at its peak (a training step), by owner."""

    weights: float
    grads: float
    optimizer: float
    ema: float
    buffers: float
    activations: float
    runtime: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))


def stage_layers(cfg: TransformerConfig, pipeline: int, stage: int) -> int:
    """Blocks of pipeline stage `stage` when blocks are balanced (the first stages take the remainder)."""
    return cfg.n_layers // pipeline + (1 if stage < cfg.n_layers % pipeline else 0)


def stage_parameters(counts: Counts, cfg: TransformerConfig, pipeline: int, stage: int) -> int:
    """Parameters of pipeline stage `stage` (embeddings on the first, head on the last)."""
    return (stage_layers(cfg, pipeline, stage) * counts.block + (counts.embed if stage == 0 else 0)
            + (counts.head if stage == pipeline - 1 else 0))


def activation_bytes(cfg: TransformerConfig, layout: Layout, precision: Precision, layers: int, device: str) -> float:
    """Activations of one micro-batch through `layers` blocks, kept for the backward."""
    tokens = cfg.seq_len * layout.micro_batch
    per_layer = ACT_BYTES_PER_ELEMENT_LAYER_16BIT * precision.act / 2 * tokens * cfg.d_model
    if device == "cpu":  # eager attention materialises scores and probabilities for every head
        per_layer += 2 * cfg.n_heads * cfg.seq_len * tokens * precision.act
    if layout.checkpointing:
        return layers * tokens * cfg.d_model * precision.act + (per_layer if layers else 0)
    return layers * per_layer


def logits_bytes(cfg: TransformerConfig, micro_batch: int, precision: Precision) -> float:
    """Logits (training dtype), their fp32 copy for the cross-entropy, and its saved log-probabilities."""
    elements = micro_batch * ((cfg.text_len - 1) * cfg.text_vocab + cfg.grid_len * cfg.image_vocab)
    return elements * (precision.act + 4 + 4)


def stage_largest(counts: Counts, pipeline: int, stage: int) -> int:
    """Elements of the stage's largest tensor (the embeddings and head are on the first and last stages)."""
    return counts.largest if stage in (0, pipeline - 1) else counts.block_largest


def overlaps(layout: Layout, settings: Settings) -> bool:
    """Whether gradient reduction overlaps the backward: DeepSpeed's pipeline engine cannot (engine.ds_config)."""
    return settings.overlap_comm and layout.pipeline == 1


def stage_memory(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings, stage: int,
                 device: str) -> Memory:
    p, prec = stage_parameters(counts, cfg, layout.pipeline, stage), settings.precision
    dp, zero = layout.data_parallel, layout.zero
    weights = prec.weight * p / (dp if zero >= 3 else 1)
    bucket = min(settings.reduce_bucket, p)  # a model smaller than a bucket never fills it
    buffers = (2 if overlaps(layout, settings) else 1) * bucket * prec.grad if zero >= 1 else 0.0
    if zero >= 3:
        live = min(counts.block + settings.prefetch_bucket, settings.max_live, p)
        persistent = sum(n for n in counts.numels if n <= settings.persistence)
        buffers += prec.weight * (live + persistent)
    grads = prec.grad * p / (dp if zero >= 2 else 1)
    if zero == 1:  # the reduced partition, copied to fp32 for the master weights' step
        grads += 4 * p / dp
    grads += prec.grad * stage_largest(counts, layout.pipeline, stage)  # a gradient computed before it is added
    master = 0 if zero == 0 and prec.name == "fp32" else prec.master  # stage 0 in fp32: torch's optimizer alone
    optimizer = (master + prec.adam) * p / (dp if zero >= 1 else 1)
    ema = 4 * p / dp if settings.ema else 0.0
    layers = stage_layers(cfg, layout.pipeline, stage)
    in_flight = min(layout.pipeline - stage, layout.grad_accum) if layout.pipeline > 1 else 1
    activations = in_flight * activation_bytes(cfg, layout, prec, layers, device)
    if stage == layout.pipeline - 1:
        activations += logits_bytes(cfg, layout.micro_batch, prec)
    return Memory(weights, grads, optimizer, ema, buffers, activations, settings.runtime)


def memory_per_rank(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings = Settings(),
                    device: str = "gpu") -> Memory:
    """Peak bytes on the busiest rank: the first pipeline stage (embeddings, most micro-batches in
    flight) or the last (head, logits)."""
    stages = {0, layout.pipeline - 1}
    return max((stage_memory(cfg, counts, layout, settings, s, device) for s in stages), key=lambda m: m.total)


def construction_bytes(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings) -> float:
    """Peak while building the model and deepspeed.initialize, before the first step.

    What DeepSpeed allocates in its constructor: the (partitioned) weights, the fp32 master partition
    and, below ZeRO-3's own buffers, the fp32 gradient partition; Adam's moments appear at the first
    step. ZeRO-3 builds inside deepspeed.zero.Init (each module whole, then partitioned as its
    constructor returns, so the largest tensor is the transient: the head's output matrix at the 12B);
    pipeline stages build only their own layers (LayerSpec). The CPU rehearsal measured this within
    1% for a 2-stage pipeline at the 12B's width.
    """
    m = stage_memory(cfg, counts, layout, settings, 0, "cpu")
    p, dp = stage_parameters(counts, cfg, layout.pipeline, 0), layout.data_parallel
    transient = settings.precision.weight * counts.largest if layout.zero >= 3 else 0.0
    master = settings.precision.master * p / (dp if layout.zero >= 1 else 1) if layout.zero >= 1 else 0.0
    return m.weights + master + 4 * p / dp + m.ema + transient + m.runtime


def checkpoint_bytes(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings) -> tuple[float, float]:
    """(busiest rank's files, all ranks' files) of one checkpoint.

    Each rank writes its optimizer partition (master + moments) and its EMA piece; below ZeRO-3 the
    first data-parallel rank of each stage writes the stage's weights as well.
    """
    prec, dp = settings.precision, layout.data_parallel
    per_param = prec.master + prec.adam + (4 if settings.ema else 0)
    owned = [stage_parameters(counts, cfg, layout.pipeline, s) for s in range(layout.pipeline)]
    weights = [0.0 if layout.zero >= 3 else prec.weight * p for p in owned]
    busiest = max(per_param * p / dp + w for p, w in zip(owned, weights))
    return busiest, sum(per_param * p + w for p, w in zip(owned, weights))


def export_bytes(counts: Counts) -> float:
    """Streaming export: the bf16 model being assembled plus one tensor converted from fp32."""
    return 2 * counts.total + 4 * counts.largest


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


def step_time(cfg: TransformerConfig, counts: Counts, plan: PlanConfig, layout: Layout, settings: Settings) -> StepTime:
    """Seconds per optimizer step: compute at the assumed MFU plus the communication overlap leaves exposed."""
    prec, dp, pp = settings.precision, layout.data_parallel, layout.pipeline
    batch = layout.micro_batch * layout.grad_accum * dp
    flops = transformer_flops_per_token(cfg) * batch * cfg.seq_len
    compute = flops / (plan.gpus * plan.peak_tflops * 1e12 * plan.assumed_mfu)
    if layout.checkpointing:
        compute *= 4 / 3  # one extra forward
    compute *= 1 + (pp - 1) / layout.grad_accum
    p = stage_parameters(counts, cfg, pp, 0)
    reduce = ring_seconds(prec.grad * p, dp, plan)
    gather = ring_seconds(prec.weight * p, dp, plan)
    if layout.zero >= 3:  # gather for forward, backward (and recompute); reduce-scatter every micro-batch
        comm = layout.grad_accum * ((3 if layout.checkpointing else 2) * gather + reduce)
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


def usr1_lead_seconds(step: float, checkpoint_total: float, plan: PlanConfig) -> int:
    """Seconds before the time limit Slurm should send USR1: finish a step, write a checkpoint, with
    a 1.5x margin and 30 s for the tasks to exit, rounded up to 10 s."""
    needed = 1.5 * (step + checkpoint_total / (plan.checkpoint_write_gbps * GB)) + 30
    return int(math.ceil(needed / 10) * 10)


def budget(plan: PlanConfig) -> float:
    return plan.gpu_mem_gb * GB * (1 - plan.headroom)


def candidate_layouts(cfg: TransformerConfig, plan: PlanConfig):
    for pp in (p for p in range(1, plan.gpus + 1) if plan.gpus % p == 0 and p <= cfg.n_layers):
        dp = plan.gpus // pp
        for zero in ((1, 2, 3) if pp == 1 else (1,)):
            for mb in (1, 2, 4, 8, 16):
                if plan.global_batch % (dp * mb):
                    continue
                for ckpt in (False, True):
                    yield Layout(pp, dp, zero, mb, ckpt, plan.global_batch // (dp * mb))


def suggest(cfg: TransformerConfig, plan: PlanConfig, counts: Counts, settings: Settings) -> Layout:
    """The fastest layout that fits with the headroom kept; ties go to less sharding (less communication)."""
    fits = [lay for lay in candidate_layouts(cfg, plan)
            if memory_per_rank(cfg, counts, lay, settings).total <= budget(plan)]
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


def launch_overrides(layout: Layout) -> str:
    """The `megadalle train` overrides that realise `layout` (conf/deepspeed, conf/trainer)."""
    parts = [f"deepspeed=pipe deepspeed.pipeline_stages={layout.pipeline}" if layout.pipeline > 1
             else f"deepspeed=zero{layout.zero}"]
    parts += [f"model.activation_checkpointing={str(layout.checkpointing).lower()}",
              f"trainer.micro_batch={layout.micro_batch}", f"trainer.grad_accum={layout.grad_accum}"]
    return " ".join(parts)


def settings_for(trainer: TrainerConfig, ds: DeepSpeedConfig, plan: PlanConfig) -> Settings:
    """The Settings `train` would run with: its precision rule, EMA, and DeepSpeed's buckets (extra included)."""
    zero = ds.extra.get("zero_optimization", {})
    precision = {"fp32": FP32, "bf16": BF16}.get(trainer.precision, BF16 if plan.device == "gpu" else FP32)
    if precision is BF16 and ds.grad_accum_dtype != "fp32":
        precision = dataclasses.replace(BF16, grad=2)
    return Settings(
        precision=precision, ema=trainer.ema is not None,
        overlap_comm=bool(zero.get("overlap_comm", ds.overlap_comm)),
        reduce_bucket=int(zero.get("reduce_bucket_size", ds.reduce_bucket_size)),
        prefetch_bucket=int(zero.get("stage3_prefetch_bucket_size", PREFETCH_DEFAULT)),
        max_live=int(zero.get("stage3_max_live_parameters", MAX_LIVE_DEFAULT)),
        persistence=int(zero.get("stage3_param_persistence_threshold", PERSISTENCE_DEFAULT)),
        runtime=plan.runtime_gb * GB if plan.device == "gpu" else 0.0)


def layout_for(model: TransformerConfig, trainer: TrainerConfig, ds: DeepSpeedConfig, plan: PlanConfig) -> Layout:
    if plan.gpus % ds.pipeline_stages:
        raise PlanError(f"deepspeed.pipeline_stages={ds.pipeline_stages} does not divide gpus={plan.gpus}")
    return Layout(ds.pipeline_stages, plan.gpus // ds.pipeline_stages, ds.zero_stage, trainer.micro_batch,
                  model.activation_checkpointing, trainer.grad_accum)


def describe(layout: Layout) -> str:
    mode = f"pipeline {layout.pipeline} x dp {layout.data_parallel} (ZeRO-{layout.zero})" if layout.pipeline > 1 \
        else f"ZeRO-{layout.zero} (dp {layout.data_parallel})"
    checkpointing = "on" if layout.checkpointing else "off"
    return f"{mode}, micro-batch {layout.micro_batch} x {layout.grad_accum}, checkpointing {checkpointing}"


MEMORY_COLUMNS = ("weights", "grads", "optimizer", "ema", "buffers", "activations", "runtime")


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
    t = step_time(model, counts, plan, layout, settings)
    busiest, total = checkpoint_bytes(model, counts, layout, settings)
    lead = usr1_lead_seconds(t.total, total, plan)
    return [
        f"this config ({plan.gpus} ranks, {settings.precision.name}, EMA {'on' if settings.ema else 'off'}): "
        f"{describe(layout)}",
        memory_header(plan), memory_row("as configured", mem, fits),
        f"  construction peak (before the first step): "
        f"{construction_bytes(model, counts, layout, settings) / GB:.2f} GB",
        f"  step: {t.total:.2f} s = compute {t.compute:.2f} s + exposed communication {t.exposed:.2f} s "
        f"(of {t.comm:.2f} s; NVLink {plan.nvlink_gbps:g} GB/s within {plan.gpus_per_node} ranks, InfiniBand "
        f"{plan.ib_gbps:g} GB/s across)",
        f"  checkpoint: {total / GB:.1f} GB in all, {busiest / GB:.2f} GB from the busiest rank; at "
        f"{plan.checkpoint_write_gbps:g} GB/s submit with sbatch --signal=B:USR1@{lead}",
        f"  export (streaming, bf16): peak {export_bytes(counts) / GB:.2f} GB",
    ]


def report(model: TransformerConfig, plan: PlanConfig, trainer: TrainerConfig, ds: DeepSpeedConfig) -> str:
    counts = count_parameters(model)
    settings = settings_for(trainer, ds, plan)
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
    lines += ["", f"other layouts at micro-batch 1 with activation checkpointing, {plan.global_batch} sequences "
              f"per step:",
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
        f"launch with: megadalle train {launch_overrides(best)}",
        f"  (Slurm: sbatch --signal=B:USR1@{lead} launch/slurm/train.sbatch ...)",
    ]
    return "\n".join(lines)


def run(cfg: DictConfig) -> int:
    model = build(TransformerConfig, cfg.model, "model")
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    ds = build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    plan = build(PlanConfig, top_level(cfg, PlanConfig), "")
    try:
        print(report(model, plan, trainer, ds))
    except PlanError as err:
        print(f"megadalle plan: impossible: {err}")
        return 1
    return 0
