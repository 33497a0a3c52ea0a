"""Triton helpers shared by the forward and backward kernels: row addresses, tile bitmasks, tuning."""
import os

import triton
import triton.language as tl


@triton.jit
def visit_rows(order_ptr, offs, seq_len, PERMUTED: tl.constexpr):
    """Sequence rows of visiting indices `offs` (the layout's order; identity when not PERMUTED).

    Indices past the sequence map to themselves; every load or store of them is masked anyway.
    """
    if PERMUTED:
        rows = tl.load(order_ptr + offs, mask=offs < seq_len, other=0)
    else:
        rows = offs
    return rows.to(tl.int64)


@triton.jit
def load_rows(base, rows, stride, offs_d, in_seq, MASKED: tl.constexpr):
    """A [rows, HEAD_DIM] tile; MASKED guards rows past the sequence (full tiles never have any)."""
    if MASKED:
        x = tl.load(base + rows[:, None] * stride + offs_d[None, :], mask=in_seq[:, None], other=0.0)
    else:
        x = tl.load(base + rows[:, None] * stride + offs_d[None, :])
    return x


@triton.jit
def tile_bits(bits_ptr, tile, q_local, k_local, BLOCK_M: tl.constexpr, WORDS: tl.constexpr):
    """Whether query `q_local` may see key `k_local` inside partial tile number `tile`.

    `q_local` and `k_local` are block-local indices that broadcast against each other, so the
    forward asks for a [BLOCK_M, BLOCK_N] tile and the dK/dV pass for its transpose.
    """
    word = tl.load(bits_ptr + (tile * BLOCK_M + q_local) * WORDS + k_local // 32)
    return ((word >> (k_local % 32)) & 1) != 0


@triton.jit
def dot(a, b, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation; PRECISION "upcast" multiplies in fp32 (see `precision`)."""
    if PRECISION == "upcast":
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


def tuning_configs() -> list:
    """Warps x pipeline stages the autotuner tries once per head size, block shape and dtype.

    Every kernel is idempotent (each output written by one program, no atomics), so timing a
    config by running it is harmless. The interpreter gets a single config: nothing to time there.
    """
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]


TUNING_KEY = ["HEAD_DIM", "BLOCK_M", "BLOCK_N", "PERMUTED", "PRECISION"]
