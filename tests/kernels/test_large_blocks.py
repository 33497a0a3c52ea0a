"""The kernel at the GPU's block size (64, attention/dispatch.py's KERNEL_BLOCK) and at 128 against dense masked
attention, under the interpreter. (128 x 128 tiles are the kernel's to run, not a GPU's at every head_dim: compiled
for sm_90 by kernels/lowering.py, dQ at head_dim 128 needs more shared memory than an H100 has.)

The small-block tests never reach a tile of more than 32 keys; these cover the wide tiles the GPU
runs: several mask words per query row, whole text key blocks read as full tiles (text 128), a
ragged last block of queries and keys, and bf16 at head_dim 128. Batch and heads stay at 1 x 2 so
the interpreter runs each case in about a second.
"""
import pytest
import torch

from .helpers import KINDS, check_against_dense, layout_of, spec_of

TEXT, GRID_H, GRID_W = 128, 9, 11
"""227 positions: a whole 128-position text block, a 9 x 11 image, ragged at blocks 64 and 128."""


@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("kind", KINDS)
def test_every_mask_forward_and_backward_at_gpu_blocks(kind, block):
    spec = spec_of(kind, TEXT, GRID_H, GRID_W)
    seq_len = spec.seq_len - 1  # one short of the mask: the layout is cut, not just the tensors
    q, k, v = (torch.randn(1, 2, seq_len, 32, requires_grad=True) for _ in range(3))
    check_against_dense(q, k, v, spec, layout_of(spec, seq_len, block), torch.float32)


@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("kind", ["row", "column", "conv"])
def test_bf16_head_dim_128(kind, block):
    spec = spec_of(kind, TEXT, GRID_H, GRID_W)
    q, k, v = (torch.randn(1, 1, spec.seq_len, 128, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    check_against_dense(q, k, v, spec, layout_of(spec, spec.seq_len, block), torch.bfloat16)
