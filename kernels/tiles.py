"""Triton helpers shared by the forward and backward kernels: the prologue, tile masks, products, tuning."""
import os

import triton
import triton.language as tl

SKIP = tl.constexpr(-2)
"""Tile code of a half that skips a key block (layout.SKIP); FULL is -1, a partial tile's number >= 0."""


@triton.jit
def batch_head(n_heads):
    """(batch x head index, batch, head) of this program: grid axis 0, so that programs of the
    same block index in every head launch together and heavy-first ordering holds across heads."""
    bh = tl.program_id(0)
    return bh, (bh // n_heads).to(tl.int64), (bh % n_heads).to(tl.int64)


@triton.jit
def block_rows(order_ptr, block, seq_len, BLOCK: tl.constexpr, PERMUTED: tl.constexpr):
    """Visiting indices of a block, their sequence rows, and which are inside the sequence.

    Rows past the sequence are clamped to its last row, so every load is unpredicated and in
    bounds; their products are masked by the tile bits (all zero there) and their stores by `in_seq`.
    """
    offs = block * BLOCK + tl.arange(0, BLOCK)
    in_seq = offs < seq_len
    clamped = tl.minimum(offs, seq_len - 1)
    if PERMUTED:
        rows = tl.load(order_ptr + clamped)
    else:
        rows = clamped
    return offs, clamped, rows.to(tl.int64), in_seq


@triton.jit
def load_tile(base, rows, stride, offs_d):
    """A [rows, HEAD_DIM] tile of one head's [L, D] slab (rows in bounds: see `block_rows`)."""
    return tl.load(base + rows[:, None] * stride + offs_d[None, :])


@triton.jit
def store_tile(base, rows, stride, offs_d, x, in_seq):
    tl.store(base + rows[:, None] * stride + offs_d[None, :], x.to(base.dtype.element_ty), mask=in_seq[:, None])


@triton.jit
def pair_step(i, pair_kb, pair_tile, order_ptr, k_base, v_base, stride_kl, stride_vl, offs_d, seq_len,
              BLOCK_N: tl.constexpr, PERMUTED: tl.constexpr):
    """Step `i` of a query-block pair's stream (the forward's and the dQ kernel's loop): the key block's
    K and V tiles, loaded once for both halves, and each half's tile number (SKIP: it sees none of it)."""
    k_offs, k_clamped, k_rows, k_in = block_rows(order_ptr, tl.load(pair_kb + i), seq_len, BLOCK_N, PERMUTED)
    k = load_tile(k_base, k_rows, stride_kl, offs_d)
    v = load_tile(v_base, k_rows, stride_vl, offs_d)
    return k, v, tl.load(pair_tile + 2 * i), tl.load(pair_tile + 2 * i + 1)


@triton.jit
def tile_allowed(bits_ptr, tile, q_local, k_local, BLOCK_M: tl.constexpr, WORDS: tl.constexpr):
    """Whether query `q_local` may see key `k_local` inside partial tile number `tile`.

    One 64-bit word per query row and word of keys (one word at block_n <= 64), shifted in
    registers. `q_local` and `k_local` broadcast against each other, so the forward asks for a
    [BLOCK_M, BLOCK_N] tile and the dK/dV pass for its transpose.
    """
    row = bits_ptr + (tile * BLOCK_M + q_local) * WORDS
    shift = (k_local % 64).to(tl.int64)
    bit = (tl.load(row) >> shift) & 1
    for w in tl.static_range(1, WORDS):
        bit = tl.where(k_local // 64 == w, (tl.load(row + w) >> shift) & 1, bit)
    return bit != 0


@triton.jit
def dot(a, b, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation; PRECISION "upcast" multiplies in fp32 (see `precision`)."""
    if PRECISION == "upcast":
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


def precision(dtype) -> str:
    """How tiles are multiplied: half types natively, fp32 exactly unless torch allows TF32.

    fp32 follows torch's own setting for CUDA matmuls, as torch's matmuls do: exact ("ieee") by default,
    TF32 after `torch.set_float32_matmul_precision("high")` or torch >= 2.9's
    `torch.backends.cuda.matmul.fp32_precision = "tf32"`. That attribute is read where it exists: it
    answers for both ways of setting it, and the legacy getter raises once the new API has been used.

    Triton's CPU interpreter multiplies bf16 tiles as their raw uint16 bits (triton 3.x
    `create_dot` only converts fp8), so under TRITON_INTERPRET=1 half tiles are widened to fp32
    first: bf16/fp16 products are exact in fp32, so this computes what the GPU computes.
    """
    import torch

    if dtype == torch.float32:
        cuda_setting = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
        if cuda_setting is not None:
            return "tf32" if cuda_setting == "tf32" else "ieee"
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return "upcast" if os.environ.get("TRITON_INTERPRET") == "1" else "tf32"


def tuning_configs() -> list:
    """Warps x pipeline stages the autotuner tries once per head size, block shape and dtype.

    Every kernel is idempotent (each output written by one program, no atomics), so timing a
    config by running it is harmless. The interpreter gets a single config: nothing to time there.
    Stages 2-4 as FlexAttention's and the fused-attention tutorial's Hopper configs use. Each
    program runs one loop over its tiles, and STAGES hands the stage count to that loop's
    `tl.range`: without it Triton 3.9 leaves a loop whose products sit under `if` unpipelined
    (no async copies in its TTGIR), whatever the kernel's num_stages.
    """
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"STAGES": 1}, num_warps=4, num_stages=1)]
    return [triton.Config({"STAGES": s}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3, 4)]


TUNING_KEY = ["HEAD_DIM", "BLOCK_M", "BLOCK_N", "PERMUTED", "PRECISION"]


def spill_free(drop_stages: tuple[int, ...] = ()):
    """An `early_config_prune` keeping, at head_dim 128, only the 8-warp configs (less `drop_stages`).

    A 128-row program at head_dim 128 holds its accumulators for 128 rows: with 4 warps every kernel
    sits at or over the 255-register limit at sm_90 (`python -m megadalle.kernels.lowering
    --head-dims 128`). Triton 3.6 (torch 2.11's) spills there: forward 52-76 bytes per thread, dK/dV 8;
    Triton 3.9 holds forward and dK/dV at 249-254 registers and spills dQ 144-168 bytes, and 8 warps x 3
    stages of dQ 4 bytes (hence dQ's `drop_stages=(3,)`). A spilling variant is never timed. The
    interpreter's single config is kept whatever the head size: it has no registers to spill.
    """
    def prune(configs: list, named_args: dict, **kwargs) -> list:
        if kwargs.get("HEAD_DIM", 0) < 128:
            return configs
        return [c for c in configs if c.num_warps == 8 and c.num_stages not in drop_stages] or configs
    return prune
