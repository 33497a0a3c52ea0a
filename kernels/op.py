"""The kernels as `torch.library` custom ops, so torch.compile traces a model that calls them.

`megadalle::sparse_attention` (forward: output and log-sum-exp) and `megadalle::sparse_attention_backward`
are opaque to the compiler: it sees their fake (shape-only) versions while tracing and calls the
real ones, which launch the Triton kernels, at run time. The layout enters as its tensors plus
two ints, so nothing but tensors and numbers crosses the op boundary; those tables fix the length
(sources.py has the ops for a length known only at run time). A `torch.autograd.Function` would
also run under torch.compile, but only while Dynamo keeps supporting tracing into it; a registered
op with `register_autograd` is the documented contract.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .backward import backward
from .forward import empty_output, forward
from .layout import Layout

TABLES = ("pair_ptr", "pair_kb", "pair_tile", "key_ptr", "key_qb", "key_tile", "bits")
"""The Layout tensors the ops take, in this order after `order`."""


def on_device(t: Tensor):
    """Triton launches on the current CUDA device, which need not be the one holding the tensors."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _layout(seq_len: int, block_m: int, block_n: int, order: Tensor | None, tables: tuple[Tensor, ...]) -> Layout:
    return Layout(seq_len, block_m, block_n, order, *tables)


def fake_forward(q: Tensor) -> tuple[Tensor, Tensor]:
    """The shapes of `forward`'s output and log-sum-exp, for an op's fake version."""
    batch, heads, seq_len, _ = q.shape
    return empty_output(q), q.new_empty(batch * heads, seq_len, dtype=torch.float32)


def fake_backward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The shapes of `backward`'s gradients, for an op's fake version."""
    return empty_output(q), empty_output(k), empty_output(v)


@torch.library.custom_op("megadalle::sparse_attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, order: Tensor | None, pair_ptr: Tensor, pair_kb: Tensor,
                 pair_tile: Tensor, key_ptr: Tensor, key_qb: Tensor, key_tile: Tensor, bits: Tensor,
                 block_m: int, block_n: int, scale: float) -> tuple[Tensor, Tensor]:
    layout = _layout(q.shape[2], block_m, block_n, order,
                     (pair_ptr, pair_kb, pair_tile, key_ptr, key_qb, key_tile, bits))
    with on_device(q):
        return forward(q, k, v, layout, scale)


@attention_op.register_fake
def _(q, k, v, order, pair_ptr, pair_kb, pair_tile, key_ptr, key_qb, key_tile, bits, block_m, block_n, scale):
    return fake_forward(q)


@torch.library.custom_op("megadalle::sparse_attention_backward", mutates_args=())
def backward_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, order: Tensor | None,
                pair_ptr: Tensor, pair_kb: Tensor, pair_tile: Tensor, key_ptr: Tensor, key_qb: Tensor,
                key_tile: Tensor, bits: Tensor, block_m: int, block_n: int,
                scale: float) -> tuple[Tensor, Tensor, Tensor]:
    layout = _layout(q.shape[2], block_m, block_n, order,
                     (pair_ptr, pair_kb, pair_tile, key_ptr, key_qb, key_tile, bits))
    with on_device(q):
        return backward(do, q, k, v, o, lse, layout, scale)


@backward_op.register_fake
def _(do, q, k, v, o, lse, order, pair_ptr, pair_kb, pair_tile, key_ptr, key_qb, key_tile, bits, block_m,
      block_n, scale):
    return fake_backward(q, k, v)


def _setup_context(ctx, inputs, output):
    q, k, v, order, *tables = inputs[:4 + len(TABLES)]
    ctx.block_m, ctx.block_n, ctx.scale = inputs[4 + len(TABLES):]
    ctx.has_order = order is not None
    ctx.save_for_backward(q, k, v, *output, *([order] if order is not None else []), *tables)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, *rest = ctx.saved_tensors
    order, tables = (rest[0], rest[1:]) if ctx.has_order else (None, rest)
    if do.stride(-1) != 1:
        do = do.contiguous()
    dq, dk, dv = backward_op(do, q, k, v, o, lse, order, *tables, ctx.block_m, ctx.block_n, ctx.scale)
    return (dq, dk, dv) + (None,) * (1 + len(TABLES) + 3)


attention_op.register_autograd(_backward, setup_context=_setup_context)


def attend_layout(q: Tensor, k: Tensor, v: Tensor, layout: Layout, scale: float) -> Tensor:
    """The forward op over `layout`'s tensors; differentiable in q, k and v."""
    tables = tuple(getattr(layout, name) for name in TABLES)
    o, _ = attention_op(q, k, v, layout.order, *tables, layout.block_m, layout.block_n, scale)
    return o
