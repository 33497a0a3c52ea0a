"""LayerNorm, fused by apex when apex is importable on CUDA (NVIDIA containers ship it).

apex is never a dependency: the PyPI package named `apex` is an unrelated project, so we only
use the real one when it is already there. Both classes share parameter names (weight, bias),
so checkpoints move freely between machines with and without apex.
"""
from __future__ import annotations

import torch
from torch import nn


def _fused_layer_norm_class():
    if not torch.cuda.is_available():
        return None
    try:
        from apex.normalization import FusedLayerNorm
    except ImportError:
        return None
    return FusedLayerNorm


def layer_norm(dim: int) -> nn.Module:
    fused = _fused_layer_norm_class()
    return fused(dim) if fused is not None else nn.LayerNorm(dim)
