"""Peak bytes one rank holds, by owner: in a training step, while building the model, and the budget.

Every byte a rank holds is counted from what the code and DeepSpeed 0.19 allocate, so that the CPU
scale rehearsal (benchmarks/scale_rehearsal.py, which measures the same quantities) can check it:
- model states, per parameter of the rank's pipeline stage: weights (2 B bf16 / 4 B fp32), gradients
  (4 B: bf16 runs accumulate and reduce in fp32), DeepSpeed's fp32 master partition (4 B, cloned
  even when training in fp32, but for ZeRO-3, whose fp32 master is the weights' own partition once the
  engine is built) and Adam's two moments (8 B). ZeRO-1 divides master and moments by the
  data-parallel degree dp, ZeRO-2 the gradients too, ZeRO-3 the weights too;
- the EMA: fp32, sharded like the optimizer state (each rank averages what it owns: 4 B / dp); and for the time
  of a validation or media grid, which run with the EMA swapped in (train/ema_swap.py), the backed-up live weights
  (this rank's piece: the training dtype / dp), one parameter's all-gather and a forward without saved activations
  (`swap`: what that holds beyond the training step's own transients, which are freed by then);
- DeepSpeed's buffers: the gradient-reduction buckets (reduce_bucket_size elements, two of them with
  overlap_comm), and under ZeRO-3 the parameters gathered at once (below) and the small parameters it
  never partitions (numel <= stage3_param_persistence_threshold). ZeRO-2/3 also flatten what they
  reduce into a new tensor (stage_1_and_2's `allreduce_bucket`, stage3's `reduce_scatter_coalesced`):
  one bucket, or one tensor larger than the bucket, which they reduce alone and whose gradient waits
  whole meanwhile (`waiting_gradient`);
- ZeRO-3's gathered parameters: the module being run (up to the largest tensor) and what DeepSpeed keeps
  beside it. Its prefetcher gathers up to stage3_prefetch_bucket_size more elements at every submodule
  call, so it runs ahead until stage3_max_live_parameters are gathered, and a parameter whose next use
  lies within stage3_max_reuse_distance stays gathered (at the forward's end, up to about half that
  distance of the last blocks' parameters wait for their recomputation). train's default window of two
  blocks for both (`deepspeed.zero3_window_blocks`) bounds it; DeepSpeed's 1e9 holds a model under
  ~1B parameters whole;
- ZeRO-3's optimizer step, sub-group by sub-group (sub_group_size elements of the rank's partition, plus at
  most one parameter's partition): the sub-group's gradients flattened into a new tensor (stage3.py's
  `_prepare_fp32_grad_for_sub_group`) and Adam's temporaries, STEP_COPIES fp32 copies in all. The step
  comes after the backward has released its gathered parameters, activations and computed gradients, so
  only what it holds beyond those counts (`step`): the peak is the larger of the two phases;
- activations per micro-batch after Korthikanti et al. (2022): 34 * seq * batch * d_model bytes per
  layer at 2-byte precision with flash attention (twice that in fp32; torch's CPU attention with a boolean
  mask is a flash kernel too, which keeps no per-head seq^2 scores, only the mask made additive in the
  activations' dtype, seq^2 per layer); with activation checkpointing only each layer's input
  plus one layer being recomputed. Stage s of a pipeline holds min(stages - s, grad_accum) micro-batches
  (1F1B, DeepSpeed's num_pipe_buffers), the last one also the logits and their fp32 cross-entropy;
- on GPU, the CUDA/NCCL runtime; and at least 10% of the memory is kept free (headroom).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.plan.counts import BY_BLOCK, Counts, stage_largest, stage_layers, stage_parameters, waiting_gradient
from megadalle.plan.layout import Layout
from megadalle.plan.precision import GB, Precision, master_bytes, resident_master_bytes
from megadalle.plan.settings import Settings, overlaps

STEP_COPIES = 3
"""fp32 copies of a ZeRO-3 optimizer sub-group its step holds at once (measured on 4 CPU ranks of a 151M model:
430 MiB above the resting state for the whole 37.75M-element partition in one sub-group, 153 MiB for
sub-groups of 12.6M elements)."""
ACT_BYTES_PER_ELEMENT_LAYER_16BIT = 34
"""Korthikanti et al. (2022), Table 2 without the seq^2 attention term (flash attention keeps none)."""


def gather_copies(device: str) -> int:
    """Full-size copies of a tensor that ZeRO-3 all-gathers: NCCL gathers into the output in place; gloo's
    all_gather_into_tensor (the CPU rehearsal's backend) stages the result in a second buffer of the output's
    size (measured: 2 x 100M gathered elements peak at twice the output)."""
    return 2 if device == "cpu" else 1


@dataclass(frozen=True)
class Memory:
    """Bytes one rank holds at its peak (a training step), by owner."""

    weights: float
    grads: float
    optimizer: float
    ema: float
    buffers: float
    activations: float
    step: float
    """What ZeRO-3's optimizer step holds beyond the backward's transient tensors (0 when it holds less)."""
    swap: float
    """What a validation's EMA swap holds beyond the training step's transients (0 when it holds less, or no EMA)."""
    runtime: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))


def activation_bytes(cfg: TransformerConfig, layout: Layout, precision: Precision, layers: int, device: str) -> float:
    """Activations of one micro-batch through `layers` blocks, kept for the backward."""
    tokens = cfg.seq_len * layout.micro_batch
    per_layer = ACT_BYTES_PER_ELEMENT_LAYER_16BIT * precision.act / 2 * tokens * cfg.d_model
    if device == "cpu":  # the mask, made additive for the kernel and kept for its backward (one for the batch)
        per_layer += cfg.seq_len * cfg.seq_len * precision.act
    if layout.checkpointing:
        return layers * tokens * cfg.d_model * precision.act + (per_layer if layers else 0)
    return layers * per_layer


def logits_bytes(cfg: TransformerConfig, micro_batch: int, precision: Precision) -> float:
    """Logits (training dtype), their fp32 copy for the cross-entropy, and its saved log-probabilities."""
    elements = micro_batch * ((cfg.text_len - 1) * cfg.text_vocab + cfg.grid_len * cfg.image_vocab)
    return elements * (precision.act + 4 + 4)


def stage_memory(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings, stage: int,
                 device: str) -> Memory:
    p, prec = stage_parameters(counts, cfg, layout.pipeline, stage, layout.partition), settings.precision
    dp, zero = layout.data_parallel, layout.zero
    weights = prec.weight * p / (dp if zero >= 3 else 1)
    bucket = min(settings.reduce_bucket, p)  # a model smaller than a bucket never fills it
    buffers = (2 if overlaps(layout, settings) else 1) * bucket * prec.grad if zero >= 1 else 0.0
    gathered = 0.0
    if zero >= 3:
        ahead = settings.max_live if settings.prefetch_bucket else 0  # the prefetcher runs ahead to its cap
        live = min(counts.largest + max(ahead, settings.max_reuse // 2), p)
        persistent = sum(n for n in counts.numels if n <= settings.persistence)
        staged = (gather_copies(device) - 1) * counts.largest  # the largest tensor's gather, staged twice on gloo
        gathered = prec.weight * (live + staged)
        buffers += gathered + prec.weight * persistent
    grads = prec.grad * p / (dp if zero >= 2 else 1)
    if zero == 1:  # the reduced partition, copied to fp32 for the master weights' step
        grads += 4 * p / dp
    computed = prec.grad * stage_largest(counts, cfg, layout.pipeline, stage, layout.partition)  # before added
    if zero >= 2:  # no pipeline here: DeepSpeed runs pipelines on ZeRO-1 only
        buffers += prec.grad * min(max(settings.reduce_bucket, counts.largest), p)
        computed += prec.grad * waiting_gradient(counts, settings.reduce_bucket)
    grads += computed
    optimizer = (resident_master_bytes(prec, zero) + prec.adam) * p / (dp if zero >= 1 else 1)
    ema = 4 * p / dp if settings.ema else 0.0
    layers = stage_layers(counts, cfg, layout.pipeline, stage, layout.partition)
    in_flight = min(layout.pipeline - stage, layout.grad_accum) if layout.pipeline > 1 else 1
    activations = in_flight * activation_bytes(cfg, layout, prec, layers, device)
    if stage == layout.pipeline - 1:
        activations += logits_bytes(cfg, layout.micro_batch, prec)
    step = 0.0
    if zero >= 3:
        sub_group = min(settings.sub_group + counts.largest / dp, p / dp)
        step = max(0.0, STEP_COPIES * 4 * sub_group - (gathered + computed + activations))
    swap = 0.0
    if settings.ema:  # after the step: the backward's gradients as computed and its activations are gone
        evaluated = activation_bytes(cfg, layout, prec, 1, device) if layers else 0.0  # one block at a time
        if stage == layout.pipeline - 1:
            evaluated += logits_bytes(cfg, layout.micro_batch, prec)
        held = prec.weight * (p / dp + stage_largest(counts, cfg, layout.pipeline, stage, layout.partition))
        swap = max(0.0, held + evaluated - (activations + computed + step))
    return Memory(weights, grads, optimizer, ema, buffers, activations, step, swap, settings.runtime)


def memory_per_rank(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings = Settings(),
                    device: str = "gpu") -> Memory:
    """Peak bytes on the busiest rank. Under type:Block that is the first pipeline stage (embeddings, most
    micro-batches in flight) or the last (head, logits); a partition by parameters or layers can load a
    middle stage more, so there every stage is weighed."""
    stages = {0, layout.pipeline - 1} if layout.partition == BY_BLOCK else range(layout.pipeline)
    return max((stage_memory(cfg, counts, layout, settings, s, device) for s in stages), key=lambda m: m.total)


def construction_bytes(cfg: TransformerConfig, counts: Counts, layout: Layout, settings: Settings,
                       device: str = "gpu") -> float:
    """Peak while building the model and deepspeed.initialize, before the first step.

    What DeepSpeed allocates in its constructor: the (partitioned) weights, the fp32 master partition
    and, below ZeRO-3's own buffers, the fp32 gradient partition; Adam's moments appear at the first
    step. ZeRO-3 builds inside deepspeed.zero.Init (each module whole, then partitioned as its
    constructor returns); its peak comes later, when DeepSpeed's ZeRO-3 optimizer, with the master and
    gradient partitions already allocated, gathers every parameter whole to hook its gradient
    (stage3.py's `create_reduce_and_remove_grad_hooks`): the largest tensor, the head's output matrix
    at the 12B, gathered (`gather_copies`). Pipeline stages build only their own layers (LayerSpec).
    The CPU rehearsal measured this within 1% for a 2-stage pipeline at the 12B's width.

    ZeRO-1/2 (and pipeline stages, which run on ZeRO-1) flatten each parameter group into one buffer
    with a copy while the group's tensors still exist (DeepSpeed 0.19, stage_1_and_2.py: the tensors
    become views of the buffer only afterwards), so the weights are held twice over the larger group,
    AdamW's decay group of matrices. That transient is the peak when the partitions are small: the
    rehearsal measured ZeRO-2 on 4 ranks at 2,921 MiB, two copies of the weights 2,934 MiB, where the
    partitions alone gave 2,201.
    """
    m = stage_memory(cfg, counts, layout, settings, 0, device)
    p, dp = stage_parameters(counts, cfg, layout.pipeline, 0, layout.partition), layout.data_parallel
    transient = settings.precision.weight * counts.largest * gather_copies(device) if layout.zero >= 3 else 0.0
    shards = dp if layout.zero >= 1 else 1
    master = master_bytes(settings.precision, layout.zero) * p / shards
    grad_partition = 4 * p / shards if master else 0.0  # fp32 stage 0 steps the weights with their own gradients
    built = m.weights + master + grad_partition + m.ema + transient + m.runtime
    if layout.zero not in (1, 2):
        return built
    larger_group = max(counts.matrices, counts.total - counts.matrices)
    return max(built, m.weights + m.weights * larger_group / counts.total + m.runtime)


def budget(plan: PlanConfig) -> float:
    return plan.gpu_mem_gb * GB * (1 - plan.headroom)
