"""What the kernels accept of q, k and v, and the checks that refuse the rest before any launch.

This module imports no triton (only torch), so `megadalle.attention.dispatch` can run the same batch
and heads check on its reference path without loading the kernels: then both backends refuse the
same input in the same words, and code that ran on a CPU does not fail on CUDA only.
"""
from __future__ import annotations

import math
import os

import torch

from .layout import Layout

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_BATCH_HEADS = 2 ** 31 - 1
"""CUDA's limit on a launch grid's first axis, where the kernels put batch x heads."""
MAX_BLOCKS = 65535
"""CUDA's limit on a launch grid's second axis, where the kernels put query-block pairs or key blocks."""


def check_batch_and_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ValueError unless q, k and v are 4-D tensors with one batch and one head count.

    The part of the checks that every attention needs: SDPA would broadcast k, v over q's batch or heads
    where the kernels refuse them.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [batch, heads, seq, head_dim], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    for name, t in (("k", k), ("v", v)):
        if t.shape[:2] != q.shape[:2]:
            raise ValueError(f"{name} has batch x heads {tuple(t.shape[:2])} but q has {tuple(q.shape[:2])}")


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Layout | None = None) -> None:
    """Raise ValueError naming the first property of q, k, v or layout the kernels cannot serve.

    Without a layout, only what q, k and v decide: a caller whose layout is looked up at run time
    checks the rest once it has one.
    """
    check_batch_and_heads(q, k, v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but q has {tuple(q.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head) dimension, got stride {t.stride(-1)}")
    # Off CUDA only the interpreter runs the kernels; without it Triton fails at launch, naming no cause.
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton kernels on device {q.device} need TRITON_INTERPRET=1, set before triton "
                         "is first imported")
    if q.dtype not in DTYPES:
        raise ValueError(f"dtype {q.dtype} is not supported; expected one of {DTYPES}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[-1]} is not supported; expected one of {HEAD_DIMS}")
    if q.shape[0] * q.shape[1] > MAX_BATCH_HEADS:
        raise ValueError(f"batch x heads = {q.shape[0] * q.shape[1]} exceeds {MAX_BATCH_HEADS} (the grid's first axis)")
    if layout is not None:
        check_layout(q, layout)


def check_layout(q: torch.Tensor, layout: Layout) -> None:
    """Raise ValueError naming the first property of `layout` the kernels cannot serve for q; the ops that look
    their layout up at run time check it alone, q, k and v having been checked before (`check_inputs`)."""
    if layout.n_key_blocks > MAX_BLOCKS:
        raise ValueError(f"{layout.n_key_blocks} key blocks exceed {MAX_BLOCKS} (the grid's second axis)")
    if q.shape[2] != layout.seq_len:
        raise ValueError(f"sequence length {q.shape[2]} does not match the layout's {layout.seq_len}")
    if layout.device != q.device:
        raise ValueError(f"layout is on {layout.device} but q is on {q.device}")


def checked_scale(q: torch.Tensor, scale: float | None) -> float:
    """The softmax scale to use: 1/sqrt(head_dim) by default, else `scale` if positive and finite."""
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return float(scale)
