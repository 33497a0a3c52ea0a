"""`megadalle plan`: will this model train on these GPUs, and how should it be laid out?

Parameters are counted on a model built on the meta device (exact, no memory used); FLOPs come
from megadalle.flops. Memory per GPU follows the ZeRO paper's accounting for mixed precision
with Adam: bf16 weights (2 B/param) and gradients (2 B/param), fp32 master weights, momentum
and variance (12 B/param); ZeRO-1 shards the optimizer states over data-parallel ranks, ZeRO-2
the gradients too, ZeRO-3 the weights too. Pipeline stages split the layers (DeepSpeed allows
pipeline only with ZeRO-1). Activations follow Korthikanti et al. (2022) with flash-style
attention (no seq^2 term): about 34 * seq * micro_batch * d_model bytes per layer, or only the
layer input (2 * seq * micro_batch * d_model bytes) per layer with activation checkpointing plus
one layer recomputed at a time. Step time counts compute, recompute and the pipeline bubble, not
communication, so between layouts that fit equally fast the one with less sharding wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.flops import transformer_flops_per_token

GB = 1e9
RESERVED_GB = 3.0
"""CUDA context, NCCL buffers and allocator fragmentation, kept free on every GPU."""
ACT_BYTES_PER_ELEMENT_LAYER = 34


class PlanError(ValueError):
    """The request cannot fit; the message says why."""


def count_parameters(cfg: TransformerConfig) -> tuple[int, int]:
    """(total, embedding + head) parameters of the model, built on the meta device."""
    from megadalle.models.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    total = sum(p.numel() for p in model.parameters())
    edges = sum(p.numel() for m in (model.embed, model.head) for p in m.parameters())
    return total, edges


@dataclass(frozen=True)
class Layout:
    pipeline: int
    data_parallel: int
    zero: int
    micro_batch: int
    checkpointing: bool


@dataclass(frozen=True)
class Memory:
    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


def memory_per_gpu(cfg: TransformerConfig, params: int, edge_params: int, layout: Layout) -> Memory:
    """Bytes on the busiest GPU (the pipeline stage holding embeddings or head and most micro-batches)."""
    dp, pp = layout.data_parallel, layout.pipeline
    edge_share = edge_params if pp == 1 else edge_params / 2  # embeddings on the first stage, head on the last
    stage_params = (params - edge_params) / pp + edge_share
    weights = 2 * stage_params / (dp if layout.zero >= 3 else 1)
    grads = 2 * stage_params / (dp if layout.zero >= 2 else 1)
    optimizer = 12 * stage_params / (dp if layout.zero >= 1 else 1)
    layers = math.ceil(cfg.n_layers / pp)
    tokens = cfg.seq_len * layout.micro_batch
    full_layer = ACT_BYTES_PER_ELEMENT_LAYER * tokens * cfg.d_model
    per_micro = 2 * tokens * cfg.d_model * layers + full_layer if layout.checkpointing else full_layer * layers
    in_flight = pp  # 1F1B: the first stage holds up to `pp` micro-batches' activations
    logits = tokens * max(cfg.text_vocab, cfg.image_vocab) * 6  # bf16 logits + fp32 softmax in the loss
    return Memory(weights, grads, optimizer, per_micro * in_flight + logits)


def step_seconds(flops_per_token: float, cfg: TransformerConfig, plan: PlanConfig, layout: Layout) -> float:
    """Estimated optimizer-step time at the assumed MFU, with recompute and pipeline bubble overheads."""
    tokens = plan.global_batch * cfg.seq_len
    seconds = flops_per_token * tokens / (plan.gpus * plan.peak_tflops * 1e12 * plan.assumed_mfu)
    if layout.checkpointing:
        seconds *= 4 / 3  # one extra forward
    micro_batches = plan.global_batch // (layout.data_parallel * layout.micro_batch)
    return seconds * (1 + (layout.pipeline - 1) / micro_batches)


def candidate_layouts(cfg: TransformerConfig, plan: PlanConfig):
    for pp in (p for p in range(1, plan.gpus + 1) if plan.gpus % p == 0 and p <= cfg.n_layers):
        dp = plan.gpus // pp
        for zero in ((1, 2, 3) if pp == 1 else (1,)):
            for mb in (1, 2, 4, 8, 16):
                if plan.global_batch % (dp * mb):
                    continue
                for ckpt in (False, True):
                    yield Layout(pp, dp, zero, mb, ckpt)


def suggest(cfg: TransformerConfig, plan: PlanConfig, params: int, edges: int) -> Layout:
    """The fastest layout that fits; ties go to less sharding (less communication)."""
    budget = (plan.gpu_mem_gb - RESERVED_GB) * GB
    fpt = transformer_flops_per_token(cfg)
    fits = [lay for lay in candidate_layouts(cfg, plan) if memory_per_gpu(cfg, params, edges, lay).total <= budget]
    if not fits:
        floor = 16 * params / plan.gpus / GB
        raise PlanError(
            f"{params / 1e9:.2f}B parameters do not fit on {plan.gpus} x {plan.gpu_mem_gb:g} GB: even fully sharded "
            f"(ZeRO-3, micro-batch 1, activation checkpointing) weights, gradients and Adam states alone take "
            f"{floor:.1f} GB per GPU (16 B/param / {plan.gpus} GPUs) of {plan.gpu_mem_gb - RESERVED_GB:.1f} GB usable, "
            f"before activations; use more GPUs, GPUs with more memory, or a smaller model")
    return min(fits, key=lambda lay: (round(step_seconds(fpt, cfg, plan, lay), 6), lay.zero, lay.pipeline, -lay.micro_batch))


def launch_overrides(layout: Layout, accumulation: int) -> str:
    """The `megadalle train` overrides that realise `layout` (conf/deepspeed, conf/trainer)."""
    parts = [f"deepspeed=pipe deepspeed.pipeline_stages={layout.pipeline}" if layout.pipeline > 1
             else f"deepspeed=zero{layout.zero}"]
    if layout.zero == 3:
        parts.append("trainer.ema=null")  # EMA needs whole parameters on every rank
    parts += [f"model.activation_checkpointing={str(layout.checkpointing).lower()}",
              f"trainer.micro_batch={layout.micro_batch}", f"trainer.grad_accum={accumulation}"]
    return " ".join(parts)


def report(cfg: TransformerConfig, plan: PlanConfig) -> str:
    params, edges = count_parameters(cfg)
    fpt = transformer_flops_per_token(cfg)
    tokens_per_step = plan.global_batch * cfg.seq_len
    best = suggest(cfg, plan, params, edges)
    lines = [
        f"parameters: {params:,} ({params / 1e9:.2f}B; embeddings and head {edges / 1e6:.1f}M)",
        f"sequence: {cfg.text_len} text + {cfg.grid_len} image = {cfg.seq_len} tokens; layers: {cfg.n_layers}, "
        f"d_model {cfg.d_model}, {cfg.n_heads} heads x {cfg.head_dim}",
        f"training FLOPs per token: {fpt / 1e9:.4g} GFLOP (forward + backward, sparse attention counted as masked)",
        f"training FLOPs per step: {fpt * tokens_per_step:.3e} ({plan.global_batch} sequences x {cfg.seq_len} tokens)",
        "",
        f"memory per GPU in GB ({plan.gpus} GPUs, micro-batch 1, activation checkpointing on):",
        f"  {'layout':<30}{'weights':>9}{'grads':>9}{'optim':>9}{'activ':>9}{'total':>9}  fits {plan.gpu_mem_gb:g} GB?",
    ]
    rows = [(f"ZeRO-{z} (dp {plan.gpus})", Layout(1, plan.gpus, z, 1, True)) for z in (1, 2, 3)]
    rows += [(f"pipeline {pp} x dp {plan.gpus // pp} (ZeRO-1)", Layout(pp, plan.gpus // pp, 1, 1, True))
             for pp in (2, 4, 8, 16, 32) if plan.gpus % pp == 0 and pp <= cfg.n_layers]
    budget = (plan.gpu_mem_gb - RESERVED_GB) * GB
    for name, lay in rows:
        m = memory_per_gpu(cfg, params, edges, lay)
        lines.append(f"  {name:<30}" + "".join(f"{x / GB:>9.1f}" for x in (m.weights, m.grads, m.optimizer, m.activations, m.total))
                     + f"  {'yes' if m.total <= budget else 'no'}")
    mem = memory_per_gpu(cfg, params, edges, best)
    seconds = step_seconds(fpt, cfg, plan, best)
    accumulation = plan.global_batch // (best.data_parallel * best.micro_batch)
    lines += [
        "",
        f"suggested layout: {best.pipeline} pipeline stage(s) x {best.data_parallel} data parallel, ZeRO-{best.zero}, "
        f"micro-batch {best.micro_batch}, {accumulation} micro-batches per step, activation checkpointing "
        f"{'on' if best.checkpointing else 'off'}: {mem.total / GB:.1f} GB per GPU of {plan.gpu_mem_gb:g}",
        f"estimated step time: {seconds:.2f} s = FLOPs per step / ({plan.gpus} GPUs x {plan.peak_tflops:g} TFLOP/s x "
        f"MFU {plan.assumed_mfu:.0%}){' x 4/3 recompute' if best.checkpointing else ''}"
        f"{f' x (1 + {best.pipeline - 1}/{accumulation} pipeline bubble)' if best.pipeline > 1 else ''}; "
        f"{tokens_per_step / seconds:,.0f} tokens/s",
        f"launch with: megadalle train {launch_overrides(best, accumulation)}",
    ]
    return "\n".join(lines)


def run(cfg: DictConfig) -> int:
    model = build(TransformerConfig, cfg.model, "model")
    plan = build(PlanConfig, top_level(cfg, PlanConfig), "")
    try:
        print(report(model, plan))
    except PlanError as err:
        print(f"megadalle plan: impossible: {err}")
        return 1
    return 0

