"""Forward pass: flash attention over the layout's tiles, saving the log-sum-exp for the backward.

One program per (query block, batch x head). It visits its full tiles first, with no masking at
all, then its partial tiles with the packed bitmask; softmax is accumulated online in fp32, in
base 2 (the scale is pre-multiplied by log2(e) so exp2 replaces exp). The saved log-sum-exp is
in the same base-2 units and in visiting order; only the backward reads it.
"""
import os

import torch
import triton
import triton.language as tl

from .layout import Layout
from .tiles import TUNING_KEY, dot, load_rows, tile_bits, tuning_configs, visit_rows

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_base, v_base, order_ptr, bits_ptr, kb, tile, offs_d, q_local,
              stride_kl, stride_vl, qk_scale, seq_len,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
              PERMUTED: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    k_local = tl.arange(0, BLOCK_N)
    offs_n = kb * BLOCK_N + k_local
    rows = visit_rows(order_ptr, offs_n, seq_len, PERMUTED)
    k = load_rows(k_base, rows, stride_kl, offs_d, offs_n < seq_len, MASKED)
    v = load_rows(v_base, rows, stride_vl, offs_d, offs_n < seq_len, MASKED)
    s = dot(q, tl.trans(k), PRECISION) * qk_scale
    if MASKED:
        s = tl.where(tile_bits(bits_ptr, tile, q_local[:, None], k_local[None, :], BLOCK_M, WORDS), s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row with nothing allowed so far keeps m = -inf; subtracting 0 instead avoids inf - inf.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, PRECISION)
    return acc, m_new, l_i


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY)
@triton.jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, order_ptr,
                full_ptr, full_idx, part_ptr, part_idx, part_tile, bits_ptr,
                stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
                stride_vb, stride_vh, stride_vl, stride_ob, stride_oh, stride_ol,
                n_heads, seq_len, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
                PERMUTED: tl.constexpr, PRECISION: tl.constexpr):
    # Later query blocks see more keys under causal masks: start them first so the tail is short.
    qb = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    q_local = tl.arange(0, BLOCK_M)
    offs_m = qb * BLOCK_M + q_local
    offs_d = tl.arange(0, HEAD_DIM)
    rows = visit_rows(order_ptr, offs_m, seq_len, PERMUTED)
    in_seq = offs_m < seq_len
    q = load_rows(q_ptr + b * stride_qb + h * stride_qh, rows, stride_ql, offs_d, in_seq, True)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for i in range(tl.load(full_ptr + qb), tl.load(full_ptr + qb + 1)):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_base, v_base, order_ptr, bits_ptr,
                                  tl.load(full_idx + i), 0, offs_d, q_local, stride_kl, stride_vl, qk_scale,
                                  seq_len, BLOCK_M, BLOCK_N, WORDS, PERMUTED, False, PRECISION)
    for i in range(tl.load(part_ptr + qb), tl.load(part_ptr + qb + 1)):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_base, v_base, order_ptr, bits_ptr,
                                  tl.load(part_idx + i), tl.load(part_tile + i), offs_d, q_local, stride_kl,
                                  stride_vl, qk_scale, seq_len, BLOCK_M, BLOCK_N, WORDS, PERMUTED, True, PRECISION)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows past the sequence end saw nothing
    out = acc / l_safe[:, None]
    tl.store(o_ptr + b * stride_ob + h * stride_oh + rows[:, None] * stride_ol + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=in_seq[:, None])
    tl.store(lse_ptr + bh * seq_len + offs_m, m_i + tl.math.log2(l_safe), mask=in_seq)


def precision(dtype: torch.dtype) -> str:
    """How tiles are multiplied: half types natively, fp32 exactly unless torch allows TF32.

    fp32 follows torch's own setting, as torch's matmuls do: exact ("ieee") by default, TF32 after
    `torch.set_float32_matmul_precision("high")`.

    Triton's CPU interpreter multiplies bf16 tiles as their raw uint16 bits (triton 3.x
    `create_dot` only converts fp8), so under TRITON_INTERPRET=1 half tiles are widened to fp32
    first: bf16/fp16 products are exact in fp32, so this computes what the GPU computes.
    """
    if dtype == torch.float32:
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return "upcast" if os.environ.get("TRITON_INTERPRET") == "1" else "tf32"


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Layout,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [B, H, L, D] (q's dtype) and base-2 log-sum-exp [B*H, L] fp32 in visiting order."""
    batch, heads, seq_len, head_dim = q.shape
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(batch * heads, seq_len, device=q.device, dtype=torch.float32)
    order = layout.order if layout.order is not None else layout.full_ptr
    grid = (layout.n_query_blocks, batch * heads)
    _fwd_kernel[grid](
        q, k, v, o, lse, order,
        layout.full_ptr, layout.full_idx, layout.part_ptr, layout.part_idx, layout.part_tile, layout.bits,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        heads, seq_len, scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_M=layout.block_m, BLOCK_N=layout.block_n, WORDS=layout.words,
        PERMUTED=layout.order is not None, PRECISION=precision(q.dtype),
    )
    return o, lse

