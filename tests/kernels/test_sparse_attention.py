"""The kernel against dense masked attention: every mask kind, forward and backward, fp32 and bf16.

Runs under TRITON_INTERPRET=1 on the CPU (set by tests/conftest.py), so shapes stay tiny; they
still cover lengths that are not a multiple of the block, several heads, batch > 1, a permuted
(column-major) visiting order, unequal query/key blocks and strided (non-contiguous) q, k, v.
"""
import pytest
import torch

from .helpers import KINDS, check_against_dense, close, layout_of, spec_of
from megadalle.attention.dispatch import kernel_layout
from megadalle.attention.masks import allowed
from megadalle.kernels import build_layout

# (batch, heads, text_len, grid_h, grid_w, head_dim, drop_last): drop_last feeds seq_len - 1 positions.
SHAPES = [
    (1, 2, 8, 4, 4, 16, False),
    (2, 3, 12, 5, 6, 16, True),
    (2, 2, 16, 6, 6, 32, False),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}h{}t{}g{}x{}d{}{}".format(*s[:6], "-1" if s[6] else ""))
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_backward_match_dense_attention(kind, shape, dtype):
    batch, heads, text_len, grid_h, grid_w, head_dim, drop_last = shape
    spec = spec_of(kind, text_len, grid_h, grid_w)
    seq_len = spec.seq_len - drop_last
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, dtype=dtype, requires_grad=True) for _ in range(3))
    check_against_dense(q, k, v, spec, layout_of(spec, seq_len), dtype)


@pytest.mark.parametrize("kind", ["row", "column"])
@pytest.mark.parametrize("blocks", [(16, 32), (32, 16)])
def test_strided_inputs_and_unequal_blocks(kind, blocks):
    """q, k, v as the model makes them (views of one qkv tensor), query and key blocks of different sizes."""
    spec = spec_of(kind, 9, 5, 5)
    base = kernel_layout(spec, spec.seq_len, 16, "cpu")
    layout = build_layout(lambda a, b: allowed(spec, a, b), spec.seq_len, *blocks, base.order)
    qkv = torch.randn(2, spec.seq_len, 3, 2, 16, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    check_against_dense(q, k, v, spec, layout, torch.float32)


@pytest.mark.parametrize("kind", ["row", "conv"])
def test_fp16(kind):
    spec = spec_of(kind, 8, 4, 4)
    q, k, v = (torch.randn(1, 2, spec.seq_len, 16, dtype=torch.float16, requires_grad=True) for _ in range(3))
    check_against_dense(q, k, v, spec, layout_of(spec, spec.seq_len), torch.float16)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,head_dim", [(torch.bfloat16, 64), (torch.float16, 32), (torch.float32, 128)],
                         ids=["bf16-d64", "fp16-d32", "fp32-d128"])
def test_compiled_kernel_on_cuda_at_the_12b_sequence(kind, dtype, head_dim):
    """The compiled path (autotuned, block 64) at text 256 + 32x32, through `attend` as the model calls it."""
    from megadalle.attention import attend
    from megadalle.attention.masks import MaskSpec

    spec = MaskSpec(kind, 256, 32, 32)
    q, k, v = (torch.randn(2, 4, spec.seq_len, head_dim, device="cuda", dtype=dtype, requires_grad=True)
               for _ in range(3))
    out = attend(q, k, v, spec, backend="triton")
    grad = torch.randn_like(out)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = attend(*leaves, spec, backend="reference")
    expected = (ref, *torch.autograd.grad(ref, leaves, grad.float()))
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, expected):
        close(a, e, dtype, name)
