"""The public call over a given layout, differentiable (kernels/op.py), with checked inputs.

`sparse_attention(q, k, v, layout, scale)` runs one given layout; `sparse_attention_from` (sources.py)
looks the layout up by the length of q at run time. Inputs are [B, H, L, D] with any
batch/head/sequence strides but a contiguous head dimension (the kernels read rows of D contiguous
elements). Anything the kernels cannot serve is refused with a ValueError that names the offending
value, before any kernel is launched (inputs.py).
"""
from __future__ import annotations

import torch

from .inputs import check_inputs, checked_scale
from .layout import Layout
from .op import attend_layout


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Layout,
                     scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v over the layout's allowed pairs; scale defaults to 1/sqrt(head_dim)."""
    check_inputs(q, k, v, layout)
    return attend_layout(q, k, v, layout, checked_scale(q, scale))
