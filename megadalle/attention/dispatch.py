"""One call for every layer's attention: the Triton block-sparse kernel on CUDA, the dense reference elsewhere.

Both paths serve the same `MaskSpec`, so the model never knows which one ran. `query_offset`
lets a KV-cached decoder ask for the mask rows of its new positions only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from megadalle.attention.masks import MaskSpec, dense_mask

BACKENDS = ("auto", "reference", "triton")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec,
                        query_offset: int = 0) -> torch.Tensor:
    """SDPA with the dense boolean mask: q [B, H, Lq, D] at positions query_offset.., k, v [B, H, Lk, D] from 0."""
    lq, lk = q.shape[-2], k.shape[-2]
    if query_offset + lq > spec.seq_len or lk > spec.seq_len:
        raise ValueError(f"positions up to {max(query_offset + lq, lk)} exceed the mask's sequence length {spec.seq_len}")
    mask = dense_mask(spec, q.device)[query_offset:query_offset + lq, :lk]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: MaskSpec, backend: str = "auto",
           query_offset: int = 0) -> torch.Tensor:
    """Masked attention of q [B, H, Lq, D] over k, v [B, H, Lk, D] under `spec`."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    if backend == "triton":
        raise NotImplementedError("the Triton attention kernel is not built yet (issue: Triton block-sparse attention)")
    return reference_attention(q, k, v, spec, query_offset)
