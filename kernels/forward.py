"""Forward pass: flash attention over the layout's tiles, saving the log-sum-exp for the backward.

One program per (batch x head, pair of query blocks): 2 x block_m query rows, held as two halves
with their own softmax state. Each item of the pair's stream loads one K/V tile and feeds it to
the halves that visit it, masking only a partial half (one bit word per row). Softmax runs online
in fp32 in base 2: the scale, pre-multiplied by log2(e), and the running max meet in one explicit FMA
(`tl.fma`, whatever the compiler's fusion default) before exp2. The FMA's product is exact and the max is
rounded, so the max's own exponent is the rounding error of its scaled logit: under 1 while a scaled logit stays
below 2^24, and past 2^31 (a logit of ~1.5e9) it can exceed exp2's range: rows of inf/NaN where dense attention
stays finite. Only a run that has long diverged gets there (a direct caller with a huge `scale` too); a clamp in
the inner loop of every program is not spent on it. The saved log-sum-exp is in base-2 units and visiting order;
only the backward reads it.
"""
import torch
import triton
import triton.language as tl

from .layout import Layout
from .tiles import (SKIP, TUNING_KEY, batch_head, block_rows, dot, load_tile, pair_step, precision, spill_free,
                    store_tile, tile_allowed, tuning_configs)

LOG2E = 1.4426950408889634


@triton.jit
def _attend(acc, m_i, l_i, q, k, v, bits_ptr, tile, q_local, k_local, qk_scale,
            BLOCK_M: tl.constexpr, WORDS: tl.constexpr, PRECISION: tl.constexpr):
    """One half's online-softmax step over one K/V tile; `m_i` is the running max in scaled units."""
    s = dot(q, tl.trans(k), PRECISION)
    if tile >= 0:
        s = tl.where(tile_allowed(bits_ptr, tile, q_local[:, None], k_local[None, :], BLOCK_M, WORDS), s,
                     float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    # A row with nothing allowed so far keeps m = -inf; subtracting 0 instead avoids inf - inf.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(tl.fma(s, qk_scale, -m_safe[:, None]))  # scale and shift in one FMA
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, PRECISION)
    return acc, m_new, l_i


@triton.jit
def _finish(acc, m_i, l_i, o_base, lse_base, offs, rows, in_seq, stride_ol, offs_d):
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows past the sequence end saw nothing
    store_tile(o_base, rows, stride_ol, offs_d, acc / l_safe[:, None], in_seq)
    tl.store(lse_base + offs, m_i + tl.math.log2(l_safe), mask=in_seq)


@triton.autotune(configs=tuning_configs(), key=TUNING_KEY, prune_configs_by={"early_config_prune": spill_free()})
@triton.jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, order_ptr, pair_ptr, pair_kb, pair_tile, bits_ptr,
                stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
                stride_vb, stride_vh, stride_vl, stride_ob, stride_oh, stride_ol,
                n_heads, seq_len, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WORDS: tl.constexpr,
                PERMUTED: tl.constexpr, PRECISION: tl.constexpr, STAGES: tl.constexpr):
    bh, b, h = batch_head(n_heads)
    # Later query blocks see more keys under causal masks: start them first so the tail is short.
    pair = tl.num_programs(1) - 1 - tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    q_local = tl.arange(0, BLOCK_M)
    k_local = tl.arange(0, BLOCK_N)
    offs_a, clamped_a, rows_a, in_a = block_rows(order_ptr, 2 * pair, seq_len, BLOCK_M, PERMUTED)
    offs_b, clamped_b, rows_b, in_b = block_rows(order_ptr, 2 * pair + 1, seq_len, BLOCK_M, PERMUTED)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    q_a = load_tile(q_base, rows_a, stride_ql, offs_d)
    q_b = load_tile(q_base, rows_b, stride_ql, offs_d)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh

    acc_a = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_a = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    m_b = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_a = tl.zeros([BLOCK_M], dtype=tl.float32)
    l_b = tl.zeros([BLOCK_M], dtype=tl.float32)
    for i in tl.range(tl.load(pair_ptr + pair), tl.load(pair_ptr + pair + 1), num_stages=STAGES):
        k, v, tile_a, tile_b = pair_step(i, pair_kb, pair_tile, order_ptr, k_base, v_base, stride_kl, stride_vl,
                                         offs_d, seq_len, BLOCK_N, PERMUTED)
        if tile_a != SKIP:
            acc_a, m_a, l_a = _attend(acc_a, m_a, l_a, q_a, k, v, bits_ptr, tile_a, q_local, k_local, qk_scale,
                                      BLOCK_M, WORDS, PRECISION)
        if tile_b != SKIP:
            acc_b, m_b, l_b = _attend(acc_b, m_b, l_b, q_b, k, v, bits_ptr, tile_b, q_local, k_local, qk_scale,
                                      BLOCK_M, WORDS, PRECISION)

    o_base = o_ptr + b * stride_ob + h * stride_oh
    lse_base = lse_ptr + bh * seq_len
    _finish(acc_a, m_a, l_a, o_base, lse_base, offs_a, rows_a, in_a, stride_ol, offs_d)
    _finish(acc_b, m_b, l_b, o_base, lse_base, offs_b, rows_b, in_b, stride_ol, offs_d)


def empty_output(t: torch.Tensor) -> torch.Tensor:
    """An empty [B, H, L, D] view of a [B, L, H, D] buffer: the kernels' output layout, the model's."""
    batch, heads, seq_len, head_dim = t.shape
    return t.new_empty(batch, seq_len, heads, head_dim).transpose(1, 2)


def launch_args(q, k, v, o, lse, layout: Layout, scale: float) -> tuple[tuple, tuple, dict]:
    """(grid, positional arguments, constexprs) of the forward kernel: what `forward` launches and
    `lowering` compiles (the same values, so the same specialisation)."""
    batch, heads, seq_len, head_dim = q.shape
    order = layout.order if layout.order is not None else layout.pair_ptr
    args = (q, k, v, o, lse, order, layout.pair_ptr, layout.pair_kb, layout.pair_tile, layout.bits,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], heads, seq_len, scale * LOG2E)
    return (batch * heads, layout.n_pairs), args, constexprs(q, layout)


def constexprs(q, layout: Layout) -> dict:
    """The kernels' compile-time arguments (shared by all three)."""
    return dict(HEAD_DIM=q.shape[-1], BLOCK_M=layout.block_m, BLOCK_N=layout.block_n, WORDS=layout.words,
                PERMUTED=layout.order is not None, PRECISION=precision(q.dtype))


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Layout,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [B, H, L, D] (q's dtype), a view of a [B, L, H, D] buffer: the model's layout, so its
    head merge is free; and the base-2 log-sum-exp [B*H, L] fp32 in visiting order."""
    batch, heads, seq_len, _ = q.shape
    o = empty_output(q)
    lse = torch.empty(batch * heads, seq_len, device=q.device, dtype=torch.float32)
    grid, args, consts = launch_args(q, k, v, o, lse, layout, scale)
    _fwd_kernel[grid](*args, **consts)
    return o, lse
