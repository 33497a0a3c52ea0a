"""`auto` gives the kernel square self-attention only: the kernel attends queries 0..L-1 over keys 0..L-1 of one
length L (kernel_attention reads it off q), so queries fewer than the keys (e.g. a cache longer than the new
tokens at position 0) must go to the dense reference, which masks q [Lq] over k [Lk] as given. The machine has no
GPU: a tensor subclass claiming CUDA takes `auto` to the point where it chooses by shape."""
import math

import pytest
import torch

from .helpers import spec_of
from megadalle.attention import dispatch
from megadalle.attention.dispatch import attend
from megadalle.attention.masks import dense_mask


class ClaimsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA, so that `auto` weighs the kernel."""

    @property
    def is_cuda(self):
        return True


class KernelTaken(Exception):
    pass


@pytest.fixture
def no_kernel(monkeypatch):
    def taken(q, k, v, spec):
        raise KernelTaken((tuple(q.shape), tuple(k.shape)))

    monkeypatch.setattr(dispatch, "kernel_attention", taken)


def qkv(lq: int, lk: int):
    torch.manual_seed(0)
    q = torch.randn(1, 2, lq, 16)
    k, v = torch.randn(1, 2, lk, 16), torch.randn(1, 2, lk, 16)
    return q, k, v


def test_square_attention_that_claims_cuda_takes_the_kernel(no_kernel):
    """The control: the subclass does reach the kernel when the shapes are square."""
    spec = spec_of("row", 4, 3, 3)
    q, k, v = (t.as_subclass(ClaimsCuda) for t in qkv(spec.seq_len, spec.seq_len))
    with pytest.raises(KernelTaken):
        attend(q, k, v, spec)


def test_fewer_queries_than_keys_take_the_dense_reference_on_cuda(no_kernel):
    spec = spec_of("row", 4, 3, 3)  # 13 positions
    lq, lk = 5, spec.seq_len
    q, k, v = qkv(lq, lk)
    out = attend(*(t.as_subclass(ClaimsCuda) for t in (q, k, v)), spec)
    mask = dense_mask(spec)[:lq, :lk]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
    torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, atol=1e-5, rtol=1e-5)
