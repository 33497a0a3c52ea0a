"""Block lookup tables that let one attention kernel serve any mask.

The kernel never sees a mask's name or a dense matrix. It sees the mask cut into block_m x block_n
tiles, each *full* (every pair allowed: no masking work at all), *partial* (an element mask read
from a packed bitmask: one 64-bit word per query row, shifted in registers) or skipped.

Two streams list the visited tiles. Forward and dQ programs own a *pair* of query blocks (128
rows at block 64): each K/V tile is loaded once for both halves, and a half that has nothing to
do in that tile skips its products, so the work done equals the visited sub-tiles (the text keys,
full for every image query, are read once per 128 rows, not per 64). The dK/dV programs own one
key block and walk its query blocks. Each stream mixes full and partial tiles in one list, so a
program runs one loop, pipelined once.

An optional visiting `order` (a permutation of the sequence) lets the kernel walk positions in
another order than raster: DALL-E's column mask is block-dense in raster order but as local as
the row mask in column-major order (see `grid_column_major_order`). Everything in a `Layout`
(tables, bits, saved log-sum-exp) is indexed in visiting order; the kernel maps a visiting index
to a sequence row through `order` only when it loads or stores q, k, v, o and their gradients.

This module imports nothing from megadalle: the caller passes the mask as a callable over index
tensors or as a dense boolean matrix, built from the mask's one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch

MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_QUERY_CHUNK = 4096
"""Query rows evaluated per call of a mask callable, to bound the memory of building a layout."""

FULL = -1
"""Tile code of a full tile; a partial tile's code is its bitmask number (>= 0)."""
SKIP = -2
"""Tile code of a half (of a query-block pair) that has nothing to do in that key block."""
WORD_BITS = 64


@dataclass(frozen=True)
class Layout:
    """Per-block tables of one mask at one sequence length and block size (see module docstring).

    CSR-style. Query side: the items of query-block pair g (blocks 2g, 2g+1) are
    `pair_ptr[g]:pair_ptr[g+1]`, each a key block `pair_kb[i]` and the two halves' tile codes
    `pair_tile[i]` (FULL, SKIP or a partial tile number). Key side: the items of key block n are
    `key_ptr[n]:key_ptr[n+1]`, each a query block `key_qb[i]` and its code `key_tile[i]` (FULL or
    a partial tile number).
    """

    seq_len: int
    block_m: int
    block_n: int
    order: torch.Tensor | None
    pair_ptr: torch.Tensor
    pair_kb: torch.Tensor
    pair_tile: torch.Tensor
    """int32 [items, 2]."""
    key_ptr: torch.Tensor
    key_qb: torch.Tensor
    key_tile: torch.Tensor
    bits: torch.Tensor
    """int64 [n_partial, block_m, words]: bit j of word w in row i allows key w*64+j of the tile."""

    @property
    def n_query_blocks(self) -> int:
        return -(-self.seq_len // self.block_m)

    @property
    def n_pairs(self) -> int:
        return self.pair_ptr.numel() - 1

    @property
    def n_key_blocks(self) -> int:
        return self.key_ptr.numel() - 1

    @property
    def words(self) -> int:
        return _words(self.block_n)

    @property
    def device(self) -> torch.device:
        return self.key_ptr.device

    def fractions(self) -> tuple[float, float]:
        """(full, partial) block_m x block_n tiles as fractions of all tiles: the products the kernels do."""
        total = self.n_query_blocks * self.n_key_blocks
        return int((self.key_tile == FULL).sum()) / total, self.bits.shape[0] / total

    def kv_loads(self) -> float:
        """K/V tiles the forward loads (one per pair item) as a fraction of all tiles."""
        return self.pair_kb.numel() / (self.n_query_blocks * self.n_key_blocks)

    def to(self, device: torch.device | str) -> "Layout":
        """The same layout with its tensors on `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return Layout(**moved)


def _words(block_n: int) -> int:
    return -(-block_n // WORD_BITS)


def grid_column_major_order(prefix: int, grid_h: int, grid_w: int, seq_len: int) -> torch.Tensor:
    """A visiting order: the `prefix` positions, then a raster H x W grid read column by column.

    Truncated to positions below `seq_len`, so a model that feeds a prefix of the sequence gets a
    permutation of exactly its positions.
    """
    grid = prefix + torch.arange(grid_h * grid_w).view(grid_h, grid_w).t().reshape(-1)
    order = torch.cat([torch.arange(min(prefix, seq_len)), grid[grid < seq_len]])
    return order.to(torch.int32)


def _check_order(order: torch.Tensor, seq_len: int) -> torch.Tensor:
    order = torch.as_tensor(order).to("cpu", torch.int64).reshape(-1)
    if order.numel() != seq_len or not torch.equal(order.sort().values, torch.arange(seq_len)):
        raise ValueError(f"order must be a permutation of range({seq_len}), got {order.numel()} entries "
                         f"{order[:8].tolist()}...")
    return order


def _visited_mask(mask: MaskFn | torch.Tensor, seq_len: int, order: torch.Tensor) -> torch.Tensor:
    """The [seq, seq] boolean mask with rows and columns taken in visiting order."""
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool or mask.dim() != 2 or min(mask.shape) < seq_len:
            raise ValueError(f"a dense mask must be a bool matrix of at least {seq_len} x {seq_len}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        return mask[:seq_len, :seq_len].cpu()[order][:, order]
    rows = [mask(order[i:i + _QUERY_CHUNK, None], order[None, :]) for i in range(0, seq_len, _QUERY_CHUNK)]
    visited = torch.cat(rows).to("cpu", torch.bool)
    if visited.shape != (seq_len, seq_len):
        raise ValueError(f"mask callable returned shape {tuple(visited.shape)}, expected ({seq_len}, {seq_len})")
    return visited


def _pack_bits(tiles: torch.Tensor, block_n: int) -> torch.Tensor:
    """[n, block_m, block_n] bools -> int64 [n, block_m, words], little-endian bits per word."""
    n, block_m, _ = tiles.shape
    words = _words(block_n)
    padded = torch.zeros(n, block_m, words * WORD_BITS, dtype=torch.int64)
    padded[..., :block_n] = tiles.to(torch.int64)
    # Bit 63 is int64's sign bit: the shifted one wraps to -2**63, so the sum is the word's two's complement.
    return (padded.view(n, block_m, words, WORD_BITS) << torch.arange(WORD_BITS)).sum(-1)


def _csr(select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row pointers and column indices of a boolean [rows, cols] matrix, int32."""
    counts = select.sum(1)
    ptr = torch.zeros(select.shape[0] + 1, dtype=torch.int64)
    ptr[1:] = counts.cumsum(0)
    return ptr.to(torch.int32), select.nonzero()[:, 1].to(torch.int32)


def build_layout(mask: MaskFn | torch.Tensor, seq_len: int, block_m: int, block_n: int,
                 order: torch.Tensor | None = None, device: torch.device | str = "cpu") -> Layout:
    """Tables of `mask` (allowed(q_idx, k_idx) over index tensors, or a dense bool matrix) at `seq_len`.

    Built on the CPU once per mask, length, block size and device; callers cache the result.
    """
    for name, value in (("seq_len", seq_len), ("block_m", block_m), ("block_n", block_n)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")
    perm = _check_order(order, seq_len) if order is not None else torch.arange(seq_len)
    visited = _visited_mask(mask, seq_len, perm)
    empty = (~visited.any(1)).nonzero()
    if empty.numel():
        raise ValueError(f"query position {int(perm[empty[0, 0]])} may attend to no key; softmax is undefined")

    nqb, nkb = -(-seq_len // block_m), -(-seq_len // block_n)
    padded = torch.zeros(nqb * block_m, nkb * block_n, dtype=torch.bool)
    padded[:seq_len, :seq_len] = visited
    tiles = padded.view(nqb, block_m, nkb, block_n).permute(0, 2, 1, 3)
    full = tiles.all(-1).all(-1)
    partial = tiles.any(-1).any(-1) & ~full

    code = torch.full((nqb + nqb % 2, nkb), SKIP, dtype=torch.int64)  # a whole number of pairs
    code[:nqb][full] = FULL
    code[:nqb][partial] = torch.arange(int(partial.sum()))
    pairs = code.view(-1, 2, nkb).transpose(1, 2)  # [pair, key block, half]
    pair_visit = (pairs != SKIP).any(-1)
    pair_ptr, pair_kb = _csr(pair_visit)
    key_visit = (code[:nqb] != SKIP).t()
    key_ptr, key_qb = _csr(key_visit)
    layout = Layout(
        seq_len=seq_len, block_m=block_m, block_n=block_n,
        order=perm.to(torch.int32) if order is not None else None,
        pair_ptr=pair_ptr, pair_kb=pair_kb, pair_tile=pairs[pair_visit].to(torch.int32).contiguous(),
        key_ptr=key_ptr, key_qb=key_qb, key_tile=code[:nqb].t()[key_visit].to(torch.int32),
        bits=_pack_bits(tiles[partial], block_n),
    )
    return layout.to(device)


def tile_mask(layout: Layout, tile: int) -> torch.Tensor:
    """Partial tile number `tile` unpacked to a [block_m, block_n] bool matrix (padding bits included)."""
    words = layout.bits[tile].cpu()
    bits = (words[..., None] >> torch.arange(WORD_BITS)) & 1
    return bits.bool().reshape(layout.block_m, -1)[:, :layout.block_n]


def _decode(layout: Layout, code: int) -> torch.Tensor:
    if code == FULL:
        return torch.ones(layout.block_m, layout.block_n, dtype=torch.bool)
    return tile_mask(layout, code)


def dense_from_layout(layout: Layout, side: str = "query") -> torch.Tensor:
    """The mask one side's tables encode, in visiting order, padded to whole blocks: for tests.

    `side` "query" reads the pair stream (forward, dQ), "key" the key stream (dK/dV). Past
    `seq_len` it must be all False: the kernels rely on the bits to mask padded keys and queries.
    """
    bm, bn = layout.block_m, layout.block_n
    out = torch.zeros(layout.n_query_blocks * bm, layout.n_key_blocks * bn, dtype=torch.bool)
    cpu = layout.to("cpu")
    ptr = cpu.pair_ptr if side == "query" else cpu.key_ptr
    for a in range(ptr.numel() - 1):
        for i in range(int(ptr[a]), int(ptr[a + 1])):
            if side == "query":
                tiles = [(2 * a + half, int(cpu.pair_kb[i]), int(cpu.pair_tile[i, half])) for half in (0, 1)]
            else:
                tiles = [(int(cpu.key_qb[i]), a, int(cpu.key_tile[i]))]
            for m, n, code in tiles:
                if code != SKIP:
                    out[m * bm:(m + 1) * bm, n * bn:(n + 1) * bn] = _decode(cpu, code)
    return out
