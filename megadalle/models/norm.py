"""LayerNorm, fused by apex when apex works on CUDA here (NVIDIA containers ship it).

apex is never a dependency: the PyPI package named `apex` is an unrelated project, so we only
use the real one when it is already there. Both classes share parameter names (weight, bias),
so checkpoints move freely between machines with and without apex.

An importable apex can still be unusable: built without its CUDA extensions (FusedLayerNorm imports
`fused_layer_norm_cuda` when constructed) or for another GPU architecture (the kernel fails at its first
call). The choice therefore builds one and runs it once, and falls back to torch's LayerNorm with one warning.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from megadalle.warn import warn

PROBE_DEVICE = "cuda"
"""Where the probe runs its one call (tests run it on the CPU, with a stand-in apex)."""


@functools.cache
def _fused_layer_norm_class():
    if not torch.cuda.is_available():
        return None
    try:
        from apex.normalization import FusedLayerNorm
    except ImportError:  # no apex here: torch's LayerNorm, nothing to say
        return None
    try:
        FusedLayerNorm(8).to(PROBE_DEVICE)(torch.zeros(2, 8, device=PROBE_DEVICE))
    except Exception as err:  # noqa: BLE001 - whatever a broken extension raises, the fallback is the same
        warn(f"apex's FusedLayerNorm does not work here ({type(err).__name__}: {err}); using torch's LayerNorm")
        return None
    return FusedLayerNorm


def layer_norm(dim: int) -> nn.Module:
    fused = _fused_layer_norm_class()
    return fused(dim) if fused is not None else nn.LayerNorm(dim)


def layer_norm_kind(model: nn.Module) -> str:
    """Which LayerNorm `model` runs, for the run's record: apex's, torch's, or none."""
    fused = _fused_layer_norm_class()
    if fused is not None and any(isinstance(module, fused) for module in model.modules()):
        return "apex FusedLayerNorm"
    return "torch LayerNorm" if any(isinstance(module, nn.LayerNorm) for module in model.modules()) else "none"
