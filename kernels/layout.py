"""Block lookup tables that let one attention kernel serve any mask.

The kernel never sees a mask's name or a dense matrix. It sees, for each query block, the key
blocks worth visiting, split into *full* tiles (every pair allowed: no masking work at all) and
*partial* tiles (an element mask read from a packed per-tile bitmask, BLOCK_M x BLOCK_N bits).
The dK/dV pass walks the same tiles from the key side, so the tables are also stored transposed.

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


@dataclass(frozen=True)
class Layout:
    """Per-block tables of one mask at one sequence length and block size (see module docstring).

    CSR-style: the tiles of query block m are `full_idx[full_ptr[m]:full_ptr[m+1]]` (key blocks) and
    `part_idx[part_ptr[m]:part_ptr[m+1]]` with their bitmask numbers in `part_tile`. The `t_*`
    tables are the same tiles listed per key block (their `*_idx` are query blocks).
    """

    seq_len: int
    block_m: int
    block_n: int
    order: torch.Tensor | None
    full_ptr: torch.Tensor
    full_idx: torch.Tensor
    part_ptr: torch.Tensor
    part_idx: torch.Tensor
    part_tile: torch.Tensor
    t_full_ptr: torch.Tensor
    t_full_idx: torch.Tensor
    t_part_ptr: torch.Tensor
    t_part_idx: torch.Tensor
    t_part_tile: torch.Tensor
    bits: torch.Tensor
    """int32 [n_partial, block_m, words]: bit j of word w in row i allows key w*32+j of the tile."""

    @property
    def n_query_blocks(self) -> int:
        return self.full_ptr.numel() - 1

    @property
    def n_key_blocks(self) -> int:
        return self.t_full_ptr.numel() - 1

    @property
    def words(self) -> int:
        return _words(self.block_n)

    @property
    def device(self) -> torch.device:
        return self.full_ptr.device

    def fractions(self) -> tuple[float, float]:
        """(full, partial) tiles as fractions of all query-block x key-block tiles."""
        total = self.n_query_blocks * self.n_key_blocks
        return self.full_idx.numel() / total, self.part_idx.numel() / total

    def to(self, device: torch.device | str) -> "Layout":
        """The same layout with its tensors on `device`."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return Layout(**moved)


def _words(block_n: int) -> int:
    return (block_n + 31) // 32


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
    """[n, block_m, block_n] bools -> int32 [n, block_m, words], little-endian bits per word."""
    n, block_m, _ = tiles.shape
    words = _words(block_n)
    padded = torch.zeros(n, block_m, words * 32, dtype=torch.int64)
    padded[..., :block_n] = tiles.to(torch.int64)
    packed = (padded.view(n, block_m, words, 32) << torch.arange(32)).sum(-1)
    packed = torch.where(packed >= 2 ** 31, packed - 2 ** 32, packed)  # two's complement for int32
    return packed.to(torch.int32)


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

    tile_id = torch.full((nqb, nkb), -1, dtype=torch.int64)
    tile_id[partial] = torch.arange(int(partial.sum()))
    full_ptr, full_idx = _csr(full)
    part_ptr, part_idx = _csr(partial)
    t_full_ptr, t_full_idx = _csr(full.t())
    t_part_ptr, t_part_idx = _csr(partial.t())
    t_part_tile = tile_id.t()[partial.t()]
    layout = Layout(
        seq_len=seq_len, block_m=block_m, block_n=block_n,
        order=perm.to(torch.int32) if order is not None else None,
        full_ptr=full_ptr, full_idx=full_idx, part_ptr=part_ptr, part_idx=part_idx,
        part_tile=tile_id[partial].to(torch.int32),
        t_full_ptr=t_full_ptr, t_full_idx=t_full_idx, t_part_ptr=t_part_ptr, t_part_idx=t_part_idx,
        t_part_tile=t_part_tile.to(torch.int32),
        bits=_pack_bits(tiles[partial], block_n),
    )
    return layout.to(device)


def tile_mask(layout: Layout, tile: int) -> torch.Tensor:
    """Partial tile number `tile` unpacked to a [block_m, block_n] bool matrix (padding bits included)."""
    words = layout.bits[tile].cpu().to(torch.int64)
    return ((words[..., None] >> torch.arange(32)) & 1).bool().reshape(layout.block_m, -1)[:, :layout.block_n]


def dense_from_layout(layout: Layout) -> torch.Tensor:
    """The mask a layout encodes, in visiting order, padded to whole blocks: `build_layout` inverted, for tests.

    Past `seq_len` it must be all False: the kernel relies on the bits to mask padded keys.
    """
    bm, bn = layout.block_m, layout.block_n
    out = torch.zeros(layout.n_query_blocks * bm, layout.n_key_blocks * bn, dtype=torch.bool)
    cpu = layout.to("cpu")
    for m in range(layout.n_query_blocks):
        for i in range(int(cpu.full_ptr[m]), int(cpu.full_ptr[m + 1])):
            n = int(cpu.full_idx[i])
            out[m * bm:(m + 1) * bm, n * bn:(n + 1) * bn] = True
        for i in range(int(cpu.part_ptr[m]), int(cpu.part_ptr[m + 1])):
            n = int(cpu.part_idx[i])
            out[m * bm:(m + 1) * bm, n * bn:(n + 1) * bn] = tile_mask(cpu, int(cpu.part_tile[i]))
    return out
