"""One call for every layer's attention: the Triton block-sparse kernel on CUDA, the dense reference elsewhere.

Both paths serve the same `MaskSpec` (the kernel's block tables are built from `masks.allowed`),
so the model never knows which one ran. The kernel's op looks its tables up when it runs (a
layout source, kernels/sources.py), so torch.compile traces the kernel path at a symbolic sequence
length too. `query_offset` lets a KV-cached decoder ask for the mask rows of its new positions
only; those few-query steps always take the reference path, on every device and backend: a handful
of query rows fill a fraction of one query block, the dense mask slice costs little there, and the
kernel stays specialised to square self-attention.

Both paths refuse q, k, v of other ranks, batches or head counts with the kernels' own check, in
the same words. That check and the layouts come from `megadalle.kernels` without triton; the
kernels' modules (sources.py) are imported at the first kernel call: importing them imports triton
and decorates the kernels, which must happen after TRITON_INTERPRET is set when the kernel runs on a
CPU (tests/conftest.py sets it first thing).
"""
from __future__ import annotations

from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from megadalle.attention.masks import MaskSpec, allowed, shared_dense_mask
from megadalle.kernels import DTYPES, HEAD_DIMS, build_layout, check_batch_and_heads, grid_column_major_order

BACKENDS = ("auto", "reference", "triton")

KERNEL_BLOCK = {"cuda": 64, "cpu": 16}
"""Tile side per device type. On GPUs 64 x 64 sub-tiles, which the forward and dQ programs read in
pairs (128 query rows): full text-key tiles cost as at 128 rows, partial ones only where the mask
needs them. The CPU interpreter runs tiny test models, where 16 keeps the tables sparse enough to
exercise every code path."""


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                        query_offset: int = 0) -> torch.Tensor:
    """SDPA with the dense boolean mask: q [B, H, Lq, D] at positions query_offset.., k, v [B, H, Lk, D] from 0."""
    lq, lk = q.shape[-2], k.shape[-2]
    if query_offset + lq > spec.seq_len or lk > spec.seq_len:
        raise ValueError(f"positions up to {max(query_offset + lq, lk)} exceed the mask's sequence length "
                         f"{spec.seq_len}")
    # Sliced before it moves: a decode step's one row, not the seq x seq mask, goes to the GPU at each call.
    mask = shared_dense_mask(spec)[query_offset:query_offset + lq, :lk].to(q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@lru_cache(maxsize=None)
def kernel_layout(spec: MaskSpec, seq_len: int, block: int, device: str):
    """The kernel's tables for `spec` over its first `seq_len` positions; built once per argument set.

    Column layers are visited text first, then the image column by column: in that order the
    column mask is as local as the row mask, so it touches about as few tiles.
    """
    order = None
    if spec.kind == "column":
        order = grid_column_major_order(spec.text_len, spec.grid_h, spec.grid_w, seq_len)
    return build_layout(partial(allowed, spec), seq_len, block, block, order, device)


def _layout_source(spec: MaskSpec, block: int) -> str:
    """Register `spec`'s layouts at `block` as one of the kernels' layout sources; returns its name.

    A constant for torch.compile: Dynamo runs it while tracing and keeps the name, all that the kernel
    op takes; the op looks the tables up when it runs, where the length is concrete even if it was
    symbolic while tracing.
    """
    from megadalle.kernels import register_layout_source

    return register_layout_source(f"{spec}, block {block}",
                                  lambda seq_len, device: kernel_layout(spec, seq_len, block, str(device)))


# What `torch.compiler.assume_constant_result` sets, set without it: the decorator imports torch._dynamo for this
# one attribute, 1.6 s of every start of a verb that builds a Transformer (torch marks its own `justknobs_check`
# so). tests/kernels/test_compile.py checks that the decorator still marks a function this way and nothing more.
_layout_source._dynamo_marked_constant = True


def kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec) -> torch.Tensor:
    """Self-attention of q, k, v [B, H, L, D] (positions 0..L-1) through the Triton kernel."""
    from megadalle.kernels import sparse_attention_from

    seq_len = q.shape[-2]
    if seq_len > spec.seq_len:
        raise ValueError(f"sequence length {seq_len} exceeds the mask's sequence length {spec.seq_len}")
    return sparse_attention_from(q, k, v, _layout_source(spec, KERNEL_BLOCK["cuda" if q.is_cuda else "cpu"]))


def _kernel_serves(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `auto` may take the kernel: square self-attention on CUDA in a dtype, head size and layout it serves."""
    if not q.is_cuda or q.shape[-2] != k.shape[-2] or any(t.stride(-1) != 1 for t in (q, k, v)):
        return False
    return q.dtype in DTYPES and q.shape[-1] in HEAD_DIMS


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec, backend: str = "auto",
           query_offset: int = 0) -> torch.Tensor:
    """Masked attention of q [B, H, Lq, D] over k, v [B, H, Lk, D] under `spec`.

    `auto` takes the kernel where it serves the input (CUDA; fp16, bf16, fp32; its head sizes) and the
    reference otherwise; `triton` forces the kernel (and its errors); `reference` forces the dense path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    check_batch_and_heads(q, k, v)
    if backend == "reference" or query_offset != 0 or (backend == "auto" and not _kernel_serves(q, k, v)):
        return reference_attention(q, k, v, spec, query_offset)
    return kernel_attention(q, k, v, spec)
