"""Backward pass: dQ over each query-block pair's stream, dK/dV over each key block's stream.

Probabilities are recomputed from q, k and the saved base-2 log-sum-exp (one FMA before exp2)
rather than stored, as in FlashAttention-2. Two kernels instead of one with atomics: the dQ kernel
owns a pair of query blocks, structured as the forward (and also computes delta = rowsum(dO * O),
which the dK/dV kernel then reads); the dK/dV kernel owns a key block and walks its query blocks,
so no output is written by two programs. Both put batch x heads on grid axis 0: the heaviest
blocks (the last query blocks; the first, text, key blocks) of every head launch first.
"""
import torch
import triton
import triton.language as tl

from .forward import LOG2E, constexprs, empty_output
from .layout import Layout
from .tiles import (SKIP, TUNING_KEY, batch_head, block_rows, dot, load_tile, pair_step, spill_free, store_tile,
                    tile_allowed, tuning_configs)


@triton.jit
def _dq_step(dq, q, do, lse, delta, k, v, bits_ptr, tile, q_local, k_local, qk_scale,
             BLOCK_M: tl.constexpr, WORDS: tl.constexpr, PRECISION: tl.constexpr):
    p = tl.math.exp2(tl.fma(dot(q, tl.trans(k), PRECISION), qk_scale, -lse[:, None]))
    if tile >= 0:
        p = tl.where(tile_allowed(bits_ptr, tile, q_local[:, None], k_local[None, :], BLOCK_M, WORDS), p, 0.0)
    ds = p * (dot(do, tl.trans(v), PRECISION) - delta[:, None])
    return dq + dot(ds.to(k.dtype), k, PRECISION)


@triton.jit
def _dq_half(pair, half, q_base, o_base, do_base, lse_base, delta_base, order_ptr, stride_ql, stride_ol,
             stride_dol, offs_d, seq_len, BLOCK_M: tl.constexpr, PERMUTED: tl.constexpr):
    """One half's rows and tiles; stores its delta (read by the dK/dV kernel)."""
    offs, clamped, rows, in_seq = block_rows(order_ptr, 2 * pair + half, seq_len, BLOCK_M, PERMUTED)
    q = load_tile(q_base, rows, stride_ql, offs_d)
    do = load_tile(do_base, rows, stride_dol, offs_d)
    delta = tl.sum(do.to(tl.float32) * load_tile(o_base, rows, stride_ol, offs_d).to(tl.float32), 1)
    tl.store(delta_base + offs, delta, mask=in_seq)
    return q, do, tl.load(lse_base + clamped), delta, rows, in_seq


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY, prune_configs_by={"early_config_prune": spill_free((3,))})
@triton.jit
def _dq_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, dq_ptr, lse_ptr, delta_ptr, order_ptr,
               pair_ptr, pair_kb, pair_tile, bits_ptr,
               stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
               stride_vb, stride_vh, stride_vl, stride_ob, stride_oh, stride_ol,
               stride_dob, stride_doh, stride_dol, stride_dqb, stride_dqh, stride_dql,
               n_heads, seq_len, qk_scale, scale,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
               PERMUTED: tl.constexpr, PRECISION: tl.constexpr, STAGES: tl.constexpr):
    bh, b, h = batch_head(n_heads)
    pair = tl.num_programs(1) - 1 - tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    q_local = tl.arange(0, BLOCK_M)
    k_local = tl.arange(0, BLOCK_N)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    o_base = o_ptr + b * stride_ob + h * stride_oh
    do_base = do_ptr + b * stride_dob + h * stride_doh
    lse_base = lse_ptr + bh * seq_len
    delta_base = delta_ptr + bh * seq_len
    q_a, do_a, lse_a, delta_a, rows_a, in_a = _dq_half(pair, 0, q_base, o_base, do_base, lse_base, delta_base,
                                                       order_ptr, stride_ql, stride_ol, stride_dol, offs_d,
                                                       seq_len, BLOCK_M, PERMUTED)
    q_b, do_b, lse_b, delta_b, rows_b, in_b = _dq_half(pair, 1, q_base, o_base, do_base, lse_base, delta_base,
                                                       order_ptr, stride_ql, stride_ol, stride_dol, offs_d,
                                                       seq_len, BLOCK_M, PERMUTED)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    dq_a = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dq_b = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for i in tl.range(tl.load(pair_ptr + pair), tl.load(pair_ptr + pair + 1), num_stages=STAGES):
        k, v, tile_a, tile_b = pair_step(i, pair_kb, pair_tile, order_ptr, k_base, v_base, stride_kl, stride_vl,
                                         offs_d, seq_len, BLOCK_N, PERMUTED)
        if tile_a != SKIP:
            dq_a = _dq_step(dq_a, q_a, do_a, lse_a, delta_a, k, v, bits_ptr, tile_a, q_local, k_local, qk_scale,
                            BLOCK_M, WORDS, PRECISION)
        if tile_b != SKIP:
            dq_b = _dq_step(dq_b, q_b, do_b, lse_b, delta_b, k, v, bits_ptr, tile_b, q_local, k_local, qk_scale,
                            BLOCK_M, WORDS, PRECISION)
    dq_base = dq_ptr + b * stride_dqb + h * stride_dqh
    store_tile(dq_base, rows_a, stride_dql, offs_d, dq_a * scale, in_a)
    store_tile(dq_base, rows_b, stride_dql, offs_d, dq_b * scale, in_b)


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY, prune_configs_by={"early_config_prune": spill_free()})
@triton.jit
def _dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, dk_ptr, dv_ptr, lse_ptr, delta_ptr, order_ptr,
                 key_ptr, key_qb, key_tile, bits_ptr,
                 stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
                 stride_vb, stride_vh, stride_vl, stride_dob, stride_doh, stride_dol,
                 stride_dkb, stride_dkh, stride_dkl, stride_dvb, stride_dvh, stride_dvl,
                 n_heads, seq_len, qk_scale, scale,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
                 PERMUTED: tl.constexpr, PRECISION: tl.constexpr, STAGES: tl.constexpr):
    bh, b, h = batch_head(n_heads)
    kb = tl.program_id(1)  # earlier key blocks (the text) serve the most queries and start first
    offs_d = tl.arange(0, HEAD_DIM)
    q_local = tl.arange(0, BLOCK_M)
    k_local = tl.arange(0, BLOCK_N)
    offs_n, clamped_n, rows, in_seq = block_rows(order_ptr, kb, seq_len, BLOCK_N, PERMUTED)
    k = load_tile(k_ptr + b * stride_kb + h * stride_kh, rows, stride_kl, offs_d)
    v = load_tile(v_ptr + b * stride_vb + h * stride_vh, rows, stride_vl, offs_d)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    do_base = do_ptr + b * stride_dob + h * stride_doh
    lse_base = lse_ptr + bh * seq_len
    delta_base = delta_ptr + bh * seq_len

    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for i in tl.range(tl.load(key_ptr + kb), tl.load(key_ptr + kb + 1), num_stages=STAGES):
        # Every unpacked value named: Triton treats one name (`_`) bound outside and inside a loop
        # as a loop-carried variable and refuses its change of type.
        q_offs, q_clamped, q_rows, q_in = block_rows(order_ptr, tl.load(key_qb + i), seq_len, BLOCK_M, PERMUTED)
        q = load_tile(q_base, q_rows, stride_ql, offs_d)
        do = load_tile(do_base, q_rows, stride_dol, offs_d)
        # Transposed tile [BLOCK_N keys, BLOCK_M queries], so dK and dV come out of plain products.
        p_t = tl.math.exp2(tl.fma(dot(k, tl.trans(q), PRECISION), qk_scale, -tl.load(lse_base + q_clamped)[None, :]))
        tile = tl.load(key_tile + i)
        if tile >= 0:
            p_t = tl.where(tile_allowed(bits_ptr, tile, q_local[None, :], k_local[:, None], BLOCK_M, WORDS), p_t, 0.0)
        dv += dot(p_t.to(do.dtype), do, PRECISION)
        ds_t = p_t * (dot(v, tl.trans(do), PRECISION) - tl.load(delta_base + q_clamped)[None, :])
        dk += dot(ds_t.to(q.dtype), q, PRECISION)
    store_tile(dk_ptr + b * stride_dkb + h * stride_dkh, rows, stride_dkl, offs_d, dk * scale, in_seq)
    store_tile(dv_ptr + b * stride_dvb + h * stride_dvh, rows, stride_dvl, offs_d, dv, in_seq)


def dq_args(do, q, k, v, o, lse, delta, dq, layout: Layout, scale: float) -> tuple[tuple, tuple, dict]:
    """(grid, positional arguments, constexprs) of the dQ kernel, as `backward` launches it."""
    batch, heads, seq_len, _ = q.shape
    order = layout.order if layout.order is not None else layout.pair_ptr
    args = (q, k, v, o, do, dq, lse, delta, order, layout.pair_ptr, layout.pair_kb, layout.pair_tile, layout.bits,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], *do.stride()[:3],
            *dq.stride()[:3], heads, seq_len, scale * LOG2E, scale)
    return (batch * heads, layout.n_pairs), args, constexprs(q, layout)


def dkdv_args(do, q, k, v, lse, delta, dk, dv, layout: Layout, scale: float) -> tuple[tuple, tuple, dict]:
    """(grid, positional arguments, constexprs) of the dK/dV kernel, as `backward` launches it."""
    batch, heads, seq_len, _ = q.shape
    order = layout.order if layout.order is not None else layout.pair_ptr
    args = (q, k, v, do, dk, dv, lse, delta, order, layout.key_ptr, layout.key_qb, layout.key_tile, layout.bits,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dk.stride()[:3],
            *dv.stride()[:3], heads, seq_len, scale * LOG2E, scale)
    return (batch * heads, layout.n_key_blocks), args, constexprs(q, layout)


def backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
             lse: torch.Tensor, layout: Layout, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (the inputs' dtype, [B, L, H, D] buffers) from the output gradient `do` (last stride 1)."""
    dq, dk, dv = (empty_output(t) for t in (q, k, v))
    delta = torch.empty_like(lse)
    grid, args, consts = dq_args(do, q, k, v, o, lse, delta, dq, layout, scale)
    _dq_kernel[grid](*args, **consts)
    grid, args, consts = dkdv_args(do, q, k, v, lse, delta, dk, dv, layout, scale)
    _dkdv_kernel[grid](*args, **consts)
    return dq, dk, dv
