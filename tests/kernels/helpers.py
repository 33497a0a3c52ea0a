"""Shared pieces of the kernel tests: small mask specs, their layouts, and dense masked attention."""
from __future__ import annotations

import math

import torch

from megadalle.attention.dispatch import kernel_layout
from megadalle.attention.masks import MaskSpec, dense_mask

KINDS = ("dense", "row", "row_strict", "column", "conv")


def spec_of(kind: str, text_len: int, grid_h: int, grid_w: int) -> MaskSpec:
    """A small spec; the conv window is 3 wide so that it stays sparse on grids of a few tokens."""
    return MaskSpec(kind, text_len, grid_h, grid_w, kernel=3)


def layout_of(spec: MaskSpec, seq_len: int, block: int = 16):
    return kernel_layout(spec, seq_len, block, "cpu")


def dense_attention(q, k, v, spec: MaskSpec):
    """softmax(q k^T / sqrt(d) masked) v in fp32 with explicit ops: the ground truth of every test."""
    seq_len = q.shape[-2]
    mask = dense_mask(spec)[:seq_len, :seq_len]
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v.float()


TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 4e-2, torch.float16: 1e-2}
"""Max error relative to the largest reference magnitude; bf16 rounds p to 8 bits before p @ v."""


def close(actual, expected, dtype, what):
    err = (actual.float() - expected).abs().max().item()
    bound = TOLERANCE[dtype] * max(expected.abs().max().item(), 1.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def check_against_dense(q, k, v, spec: MaskSpec, layout, dtype):
    """The kernel's output and q, k, v gradients against `dense_attention` in fp32."""
    from megadalle.kernels import sparse_attention

    out = sparse_attention(q, k, v, layout)
    assert out.dtype == dtype and out.shape == q.shape
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = dense_attention(*leaves, spec)
    rq, rk, rv = torch.autograd.grad(ref, leaves, grad.float())
    for name, a, e in (("out", out, ref), ("dq", dq, rq), ("dk", dk, rk), ("dv", dv, rv)):
        close(a, e, dtype, name)
