"""Attention whose layout is looked up at run time from the length of q: what torch.compile can trace
when the sequence length is symbolic (dynamic=True, or a second length seen).

A layout's tables are built from the mask at one concrete length, and their sizes depend on the mask,
so they cannot be traced from a symbolic length, nor passed to op.py's ops as graph inputs. Here the
caller registers a *layout source* (the layout at any sequence length and device, cached as the caller
sees fit) under a name, and only that name crosses the op boundary: the ops' real implementations,
where lengths are concrete, call the source; their fake versions need nothing but the shapes of q, k, v.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .backward import backward
from .forward import forward
from .inputs import check_inputs, check_layout, checked_scale
from .layout import Layout
from .op import fake_backward, fake_forward, on_device

LayoutSource = Callable[[int, torch.device], Layout]
"""(sequence length, device) -> the mask's layout there; called at every run of the ops, so it caches."""

_SOURCES: dict[str, LayoutSource] = {}


def register_layout_source(name: str, source: LayoutSource) -> str:
    """Make `source` the layout source that `sparse_attention_from(..., name)` uses; returns `name`."""
    _SOURCES[name] = source
    return name


def _layout(source: str, q: Tensor) -> Layout:
    if source not in _SOURCES:
        raise ValueError(f"no layout source is registered as {source!r} (see register_layout_source)")
    return _SOURCES[source](q.shape[2], q.device)


@torch.library.custom_op("megadalle::sparse_attention_from", mutates_args=())
def attention_from_op(q: Tensor, k: Tensor, v: Tensor, source: str, scale: float) -> tuple[Tensor, Tensor]:
    layout = _layout(source, q)
    check_layout(q, layout)
    with on_device(q):
        return forward(q, k, v, layout, scale)


@attention_from_op.register_fake
def _(q, k, v, source, scale):
    return fake_forward(q)


@torch.library.custom_op("megadalle::sparse_attention_from_backward", mutates_args=())
def backward_from_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, source: str,
                     scale: float) -> tuple[Tensor, Tensor, Tensor]:
    with on_device(q):
        return backward(do, q, k, v, o, lse, _layout(source, q), scale)


@backward_from_op.register_fake
def _(do, q, k, v, o, lse, source, scale):
    return fake_backward(q, k, v)


def _setup_context(ctx, inputs, output):
    q, k, v, ctx.source, ctx.scale = inputs
    ctx.save_for_backward(q, k, v, *output)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse = ctx.saved_tensors
    if do.stride(-1) != 1:
        do = do.contiguous()
    return (*backward_from_op(do, q, k, v, o, lse, ctx.source, ctx.scale), None, None)


attention_from_op.register_autograd(_backward, setup_context=_setup_context)


def sparse_attention_from(q: Tensor, k: Tensor, v: Tensor, source: str, scale: float | None = None) -> Tensor:
    """`sparse_attention` over the layout that the source registered as `source` gives for q's length and device.

    What q, k and v decide is checked here, the layout at run time, before any kernel is launched.
    """
    check_inputs(q, k, v)
    o, _ = attention_from_op(q, k, v, source, checked_scale(q, scale))
    return o
