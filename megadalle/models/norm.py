"""LayerNorm, fused by apex when apex works on CUDA here (NVIDIA containers ship it).

apex is never a dependency: the PyPI package named `apex` is an unrelated project, so we only
use the real one when it is already there. Both classes share parameter names (weight, bias),
so checkpoints move freely between machines with and without apex.

An importable apex can still be unusable: built without its CUDA extensions (`fused_layer_norm_cuda` is
imported at the kernel's first call) or for another GPU architecture (the kernel fails at that call). The
choice therefore runs apex's functional kernel once and falls back to torch's LayerNorm with one warning.
The probe builds no module and creates its tensors on an explicit device: the first layer_norm() often
runs under `torch.device("meta")` (loading for generate/export) or deepspeed.zero.Init (ZeRO-3), where a
module built and run in the ambient context fails and would switch apex off for the whole process.
"""
from __future__ import annotations

import functools
import sys

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
        from apex.normalization.fused_layer_norm import fused_layer_norm_affine
    except ImportError:  # no apex here: torch's LayerNorm, nothing to say
        return None
    try:
        # keywords: older apex releases order normalized_shape before weight, with the same names
        fused_layer_norm_affine(input=torch.zeros(2, 8, device=PROBE_DEVICE),
                                weight=torch.ones(8, device=PROBE_DEVICE), bias=torch.zeros(8, device=PROBE_DEVICE),
                                normalized_shape=(8,), eps=1e-5)
    except Exception as err:  # noqa: BLE001 - whatever a broken extension raises, the fallback is the same
        warn(f"apex's FusedLayerNorm does not work here ({type(err).__name__}: {err}); using torch's LayerNorm")
        return None
    return FusedLayerNorm


def layer_norm(dim: int) -> nn.Module:
    fused = _fused_layer_norm_class()
    return fused(dim) if fused is not None else nn.LayerNorm(dim)


def layer_norm_kind(model: nn.Module) -> str:
    """Which LayerNorm `model` runs, for the run's record: apex's, torch's, or none.

    Read from the modules present, without probing apex: a model with no LayerNorm (the dVAE) must not set
    off the probe and its warning. An apex module can only be present if apex.normalization was imported.
    """
    fused = getattr(sys.modules.get("apex.normalization"), "FusedLayerNorm", None)
    if fused is not None and any(isinstance(module, fused) for module in model.modules()):
        return "apex FusedLayerNorm"
    return "torch LayerNorm" if any(isinstance(module, nn.LayerNorm) for module in model.modules()) else "none"
