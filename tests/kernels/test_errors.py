"""Input the kernel cannot serve is refused before launch, with an error that names the value."""
import os
import subprocess
import sys

import pytest
import torch

from .helpers import layout_of, spec_of
from megadalle.attention import attend
from megadalle.kernels import Layout, register_layout_source, sparse_attention, sparse_attention_from

SPEC = spec_of("row", 8, 4, 4)
LAYOUT = layout_of(SPEC, SPEC.seq_len)


def _qkv(seq_len=SPEC.seq_len, head_dim=16, dtype=torch.float32):
    return [torch.randn(1, 2, seq_len, head_dim, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("head_dim", [24, 8, 256])
def test_head_dim(head_dim):
    with pytest.raises(ValueError, match=f"head_dim {head_dim}"):
        sparse_attention(*_qkv(head_dim=head_dim), LAYOUT)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_dtype(dtype):
    with pytest.raises(ValueError, match=str(dtype)):
        sparse_attention(*[t.to(dtype) for t in _qkv()], LAYOUT)


def test_mismatched_shapes_and_dtypes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"k has shape \(1, 2, 23, 16\)"):
        sparse_attention(q, k[:, :, :-1], v, LAYOUT)
    with pytest.raises(ValueError, match="v has dtype torch.bfloat16"):
        sparse_attention(q, k, v.bfloat16(), LAYOUT)
    with pytest.raises(ValueError, match=r"got \(2, 24, 16\)"):
        sparse_attention(q[0], k[0], v[0], LAYOUT)


def test_non_contiguous_head_dimension():
    q, k, v = _qkv()
    q = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    with pytest.raises(ValueError, match=f"stride {SPEC.seq_len}"):
        sparse_attention(q, k, v, LAYOUT)


def test_layout_for_another_sequence_length():
    with pytest.raises(ValueError, match="sequence length 23 does not match the layout's 24"):
        sparse_attention(*_qkv(seq_len=23), LAYOUT)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        sparse_attention(*_qkv(), LAYOUT, scale)


def test_attend_refuses_unknown_backend_and_overlong_sequences():
    with pytest.raises(ValueError, match="'cuda'"):
        attend(*_qkv(), SPEC, backend="cuda")
    with pytest.raises(ValueError, match="sequence length 25 exceeds"):
        attend(*_qkv(seq_len=25), SPEC, backend="triton")


def test_batch_times_heads_beyond_the_grid_limit():
    q = torch.zeros(1, 1, SPEC.seq_len, 16).expand(2 ** 31, 1, SPEC.seq_len, 16)  # no memory behind it
    with pytest.raises(ValueError, match="2147483648"):
        sparse_attention(q, q, q, LAYOUT)


def test_more_key_blocks_than_the_grid_allows():
    seq_len = 65536 * 16
    empty = torch.zeros(0, dtype=torch.int32)
    layout = Layout(seq_len, 16, 16, None, empty, empty, empty, torch.zeros(65537, dtype=torch.int32), empty, empty,
                    torch.zeros(0, 16, 1, dtype=torch.int64))
    q = torch.zeros(1, 1, 1, 16).expand(1, 1, seq_len, 16)
    with pytest.raises(ValueError, match="65536 key blocks exceed 65535"):
        sparse_attention(q, q, q, layout)


def test_layout_source_unknown_or_at_another_length():
    """The layout a source gives at run time is checked as a given one is, before launch."""
    with pytest.raises(ValueError, match="no layout source is registered as 'nowhere'"):
        sparse_attention_from(*_qkv(), "nowhere")
    source = register_layout_source("test: always 24 long", lambda seq_len, device: LAYOUT)
    with pytest.raises(ValueError, match="sequence length 23 does not match the layout's 24"):
        sparse_attention_from(*_qkv(seq_len=23), source)
    with pytest.raises(ValueError, match="scale"):
        sparse_attention_from(*_qkv(), source, 0.0)


@pytest.mark.parametrize("backend", ["reference", "auto", "triton"])
@pytest.mark.parametrize("heads", [1, 3])
def test_attend_refuses_keys_of_other_heads_on_every_backend(backend, heads):
    """SDPA would broadcast 1 head over 2 (and fail in its own words on 3); the kernel refuses both."""
    q = _qkv()[0]
    k, v = (torch.randn(1, heads, SPEC.seq_len, 16) for _ in range(2))
    with pytest.raises(ValueError, match=rf"k has batch x heads \(1, {heads}\) but q has \(1, 2\)"):
        attend(q, k, v, SPEC, backend=backend)


def test_attend_refuses_values_of_another_batch():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"v has batch x heads \(2, 2\) but q has \(1, 2\)"):
        attend(q, k, v.expand(2, -1, -1, -1), SPEC, backend="reference")


def _refusal(call) -> str:
    with pytest.raises(ValueError) as refused:
        call()
    return str(refused.value)


@pytest.mark.parametrize("case", ["keys of other heads", "values of another batch", "3-D queries", "no keys"])
def test_the_kernels_and_every_backend_refuse_bad_ranks_batches_and_heads_in_the_same_words(case):
    """One check (kernels/inputs.py) for the dispatch and the kernels: the kernels named keys of other heads by
    their whole shape, the dispatch by batch x heads, and the dispatch failed on keys that are no tensor."""
    q, k, v = _qkv()
    q, k, v = {"keys of other heads": (q, torch.randn(1, 3, SPEC.seq_len, 16), v),
               "values of another batch": (q, k, v.expand(2, -1, -1, -1)),
               "3-D queries": (q[0], k, v), "no keys": (q, None, v)}[case]
    source = register_layout_source("test: always 24 long", lambda seq_len, device: LAYOUT)
    refusals = {_refusal(lambda: sparse_attention(q, k, v, LAYOUT)),
                _refusal(lambda: sparse_attention_from(q, k, v, source))}
    refusals |= {_refusal(lambda: attend(q, k, v, SPEC, backend=backend))
                 for backend in ("reference", "auto", "triton")}
    assert len(refusals) == 1, refusals


NO_INTERPRETER = """
import torch
from megadalle.attention import attend
from megadalle.attention.dispatch import kernel_layout
from megadalle.attention.masks import MaskSpec
from megadalle.kernels import sparse_attention

spec = MaskSpec("row", 3, 4, 5)
q = torch.randn(1, 2, spec.seq_len, 16)
layout = kernel_layout(spec, spec.seq_len, 16, "cpu")
for name, call in (("sparse_attention", lambda: sparse_attention(q, q, q, layout)),
                   ("attend", lambda: attend(q, q, q, spec, "triton"))):
    try:
        call()
    except ValueError as e:
        print(name, e)
"""


def test_cpu_tensors_without_the_interpreter_are_refused_before_launch():
    """Without TRITON_INTERPRET Triton itself fails at launch ("0 active drivers"), naming no cause."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", NO_INTERPRETER], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    refusal = "the Triton kernels on device cpu need TRITON_INTERPRET=1, set before triton is first imported"
    assert done.stdout.splitlines() == [f"sparse_attention {refusal}", f"attend {refusal}"]
