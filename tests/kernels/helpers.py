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
