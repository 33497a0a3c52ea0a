"""The dtype each tensor is written and read in: floating tensors take the one asked for, integer and boolean ones
keep theirs.

One place because the writers (`cast`; `export_layout`, which plans the files before any tensor is read), the
loader (`as_dtype`, on the device it reads onto) and a run's consolidation must convert alike, or the planned
files would not match what is written into them.
"""
from __future__ import annotations

import torch

from megadalle.planned_safetensors import Layout

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating tensors in `dtype`, where they are; integer and boolean ones keep theirs."""
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor as the export writes it: on the CPU, contiguous, floating ones in the export dtype."""
    return as_dtype(tensor.detach().to("cpu"), dtype).contiguous()


def export_layout(state: dict[str, torch.Tensor], dtype: torch.dtype) -> Layout:
    """Each tensor's shape and its dtype once `cast` (the tensors may be on the meta device)."""
    return {name: (t.shape, dtype if t.is_floating_point() else t.dtype) for name, t in state.items()}
