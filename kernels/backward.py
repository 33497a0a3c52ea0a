"""Backward pass: dQ over each query block's tiles, dK/dV over each key block's (transposed) tiles.

Probabilities are recomputed from q, k and the saved base-2 log-sum-exp rather than stored, as in
FlashAttention-2. Two kernels instead of one with atomics: the dQ kernel owns a query block (and
also computes delta = rowsum(dO * O), which the dK/dV kernel then reads); the dK/dV kernel owns a
key block and walks the layout's transposed tables, so no output is written by two programs.
"""
import torch
import triton
import triton.language as tl

from .forward import LOG2E, precision
from .layout import Layout
from .tiles import TUNING_KEY, dot, load_rows, tile_bits, tuning_configs, visit_rows


@triton.jit
def _dq_tile(dq, q, do, lse, delta, k_base, v_base, order_ptr, bits_ptr, kb, tile, offs_d, q_local,
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
    p = tl.math.exp2(s - lse[:, None])
    dp = dot(do, tl.trans(v), PRECISION)
    ds = p * (dp - delta[:, None])
    return dq + dot(ds.to(k.dtype), k, PRECISION)


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY)
@triton.jit
def _dq_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, dq_ptr, lse_ptr, delta_ptr, order_ptr,
               full_ptr, full_idx, part_ptr, part_idx, part_tile, bits_ptr,
               stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
               stride_vb, stride_vh, stride_vl, stride_ob, stride_oh, stride_ol,
               stride_dob, stride_doh, stride_dol, stride_dqb, stride_dqh, stride_dql,
               n_heads, seq_len, qk_scale, scale,
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
    o = load_rows(o_ptr + b * stride_ob + h * stride_oh, rows, stride_ol, offs_d, in_seq, True)
    do = load_rows(do_ptr + b * stride_dob + h * stride_doh, rows, stride_dol, offs_d, in_seq, True)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    tl.store(delta_ptr + bh * seq_len + offs_m, delta, mask=in_seq)
    lse = tl.load(lse_ptr + bh * seq_len + offs_m, mask=in_seq, other=0.0)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for i in range(tl.load(full_ptr + qb), tl.load(full_ptr + qb + 1)):
        dq = _dq_tile(dq, q, do, lse, delta, k_base, v_base, order_ptr, bits_ptr, tl.load(full_idx + i), 0,
                      offs_d, q_local, stride_kl, stride_vl, qk_scale, seq_len,
                      BLOCK_M, BLOCK_N, WORDS, PERMUTED, False, PRECISION)
    for i in range(tl.load(part_ptr + qb), tl.load(part_ptr + qb + 1)):
        dq = _dq_tile(dq, q, do, lse, delta, k_base, v_base, order_ptr, bits_ptr, tl.load(part_idx + i),
                      tl.load(part_tile + i), offs_d, q_local, stride_kl, stride_vl, qk_scale, seq_len,
                      BLOCK_M, BLOCK_N, WORDS, PERMUTED, True, PRECISION)
    tl.store(dq_ptr + b * stride_dqb + h * stride_dqh + rows[:, None] * stride_dql + offs_d[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=in_seq[:, None])


@triton.jit
def _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_ptr, delta_ptr, order_ptr, bits_ptr, qb, tile, offs_d,
               k_local, stride_ql, stride_dol, qk_scale, seq_len,
               BLOCK_M: tl.constexpr, WORDS: tl.constexpr,
               PERMUTED: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    q_local = tl.arange(0, BLOCK_M)
    offs_m = qb * BLOCK_M + q_local
    rows = visit_rows(order_ptr, offs_m, seq_len, PERMUTED)
    in_seq = offs_m < seq_len
    q = load_rows(q_base, rows, stride_ql, offs_d, in_seq, MASKED)
    do = load_rows(do_base, rows, stride_dol, offs_d, in_seq, MASKED)
    if MASKED:
        lse = tl.load(lse_ptr + offs_m, mask=in_seq, other=0.0)
        delta = tl.load(delta_ptr + offs_m, mask=in_seq, other=0.0)
    else:
        lse = tl.load(lse_ptr + offs_m)
        delta = tl.load(delta_ptr + offs_m)
    # Transposed tile [BLOCK_N keys, BLOCK_M queries], so dK and dV come out of plain products.
    s_t = dot(k, tl.trans(q), PRECISION) * qk_scale
    if MASKED:
        s_t = tl.where(tile_bits(bits_ptr, tile, q_local[None, :], k_local[:, None], BLOCK_M, WORDS), s_t, float("-inf"))
    p_t = tl.math.exp2(s_t - lse[None, :])
    dv = dv + dot(p_t.to(do.dtype), do, PRECISION)
    dp_t = dot(v, tl.trans(do), PRECISION)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = dk + dot(ds_t.to(q.dtype), q, PRECISION)
    return dk, dv


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY)
@triton.jit
def _dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, dk_ptr, dv_ptr, lse_ptr, delta_ptr, order_ptr,
                 t_full_ptr, t_full_idx, t_part_ptr, t_part_idx, t_part_tile, bits_ptr,
                 stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
                 stride_vb, stride_vh, stride_vl, stride_dob, stride_doh, stride_dol,
                 stride_dkb, stride_dkh, stride_dkl, stride_dvb, stride_dvh, stride_dvl,
                 n_heads, seq_len, qk_scale, scale,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
                 PERMUTED: tl.constexpr, PRECISION: tl.constexpr):
    kb = tl.program_id(0)  # earlier key blocks (the text) serve the most queries and start first
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    k_local = tl.arange(0, BLOCK_N)
    offs_n = kb * BLOCK_N + k_local
    offs_d = tl.arange(0, HEAD_DIM)
    rows = visit_rows(order_ptr, offs_n, seq_len, PERMUTED)
    in_seq = offs_n < seq_len
    k = load_rows(k_ptr + b * stride_kb + h * stride_kh, rows, stride_kl, offs_d, in_seq, True)
    v = load_rows(v_ptr + b * stride_vb + h * stride_vh, rows, stride_vl, offs_d, in_seq, True)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    do_base = do_ptr + b * stride_dob + h * stride_doh
    lse_base = lse_ptr + bh * seq_len
    delta_base = delta_ptr + bh * seq_len

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for i in range(tl.load(t_full_ptr + kb), tl.load(t_full_ptr + kb + 1)):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, order_ptr, bits_ptr,
                            tl.load(t_full_idx + i), 0, offs_d, k_local, stride_ql, stride_dol, qk_scale, seq_len,
                            BLOCK_M, WORDS, PERMUTED, False, PRECISION)
    for i in range(tl.load(t_part_ptr + kb), tl.load(t_part_ptr + kb + 1)):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, order_ptr, bits_ptr,
                            tl.load(t_part_idx + i), tl.load(t_part_tile + i), offs_d, k_local, stride_ql,
                            stride_dol, qk_scale, seq_len, BLOCK_M, WORDS, PERMUTED, True, PRECISION)
    tl.store(dk_ptr + b * stride_dkb + h * stride_dkh + rows[:, None] * stride_dkl + offs_d[None, :],
             (dk * scale).to(dk_ptr.dtype.element_ty), mask=in_seq[:, None])
    tl.store(dv_ptr + b * stride_dvb + h * stride_dvh + rows[:, None] * stride_dvl + offs_d[None, :],
             dv.to(dv_ptr.dtype.element_ty), mask=in_seq[:, None])


def backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
             lse: torch.Tensor, layout: Layout, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (contiguous, the inputs' dtype) from the output gradient `do` ([B, H, L, D], last stride 1)."""
    batch, heads, seq_len, head_dim = q.shape
    dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
    delta = torch.empty_like(lse)
    order = layout.order if layout.order is not None else layout.full_ptr
    common = dict(HEAD_DIM=head_dim, BLOCK_M=layout.block_m, BLOCK_N=layout.block_n, WORDS=layout.words,
                  PERMUTED=layout.order is not None, PRECISION=precision(q.dtype))
    _dq_kernel[(layout.n_query_blocks, batch * heads)](
        q, k, v, o, do, dq, lse, delta, order,
        layout.full_ptr, layout.full_idx, layout.part_ptr, layout.part_idx, layout.part_tile, layout.bits,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], *do.stride()[:3], *dq.stride()[:3],
        heads, seq_len, scale * LOG2E, scale, **common,
    )
    _dkdv_kernel[(layout.n_key_blocks, batch * heads)](
        q, k, v, do, dk, dv, lse, delta, order,
        layout.t_full_ptr, layout.t_full_idx, layout.t_part_ptr, layout.t_part_idx, layout.t_part_tile,
        layout.bits,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dk.stride()[:3], *dv.stride()[:3],
        heads, seq_len, scale * LOG2E, scale, **common,
    )
    return dq, dk, dv
