"""The Transformer's vocabulary tables (token embeddings, output matrix), whole or cut into row pieces.

ZeRO-3 gathers a parameter whole before its module runs, and every mode computes and reduces a
gradient whole, so in a model whose vocabularies outweigh its blocks a table is the largest thing a rank
holds at once: the 151M rehearsal's 25M-element output matrix is two of its blocks. Cut every
`model.vocab_chunk` rows into pieces, each piece its own module called on its own, a table is gathered,
used and released a piece at a time, and its gradient computed and reduced a piece at a time (measured
at 151M with pieces of 4096 rows: 11.5% less per rank under ZeRO-1, 16.8% under ZeRO-3). The pieces
compute what a whole table holding the same rows computes (bit for bit on the CPU, where the tests check).
With `vocab_chunk` 0 (or a table no longer than it) a table is one parameter under today's names, so
checkpoints of whole-table models load as before. The pieces are a training-memory layout only: exported
weights hold whole tables (`whole_tables`), so what samples from them, or any other tool, never sees them.
"""
from __future__ import annotations

from itertools import accumulate
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from megadalle.models.gpt_init import Embedding, normal_table


def piece_rows(rows: int, chunk: int) -> list[int]:
    """Rows of each piece of a `rows`-row table cut every `chunk` rows (one piece when chunk is 0)."""
    if chunk <= 0 or rows <= chunk:
        return [rows]
    return [min(chunk, rows - start) for start in range(0, rows, chunk)]


def edges(sizes: list[int]) -> list[int]:
    """Where each piece starts, then where the last one ends."""
    return list(accumulate(sizes, initial=0))


class EmbeddingPieces(nn.Module):
    """A token embedding whose rows live in several pieces; ids look up the piece that holds them."""

    def __init__(self, sizes: list[int], d: int):
        super().__init__()
        self.pieces = nn.ModuleList(Embedding(n, d) for n in sizes)
        self.starts = edges(sizes)[:-1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = None
        for start, piece in zip(self.starts, self.pieces):
            rows = piece((ids - start).clamp(0, piece.num_embeddings - 1))
            inside = ((ids >= start) & (ids < start + piece.num_embeddings)).unsqueeze(-1)
            out = rows if out is None else torch.where(inside, rows, out)
        return out


def token_embedding(rows: int, d: int, chunk: int) -> nn.Module:
    """An [rows, d] token embedding: one nn.Embedding, or pieces of at most `chunk` rows."""
    sizes = piece_rows(rows, chunk)
    return Embedding(rows, d) if len(sizes) == 1 else EmbeddingPieces(sizes, d)


class RowLinear(nn.Module):
    """A bias-free output matrix whose forward may use a slice of its rows (one segment's vocabulary).

    Calling the module (not reading its `.weight` from outside) is what lets ZeRO-3's hooks gather the
    weight before use.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = normal_table(n_out, n_in)

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        return F.linear(x, self.weight[rows])


class RowLinearPieces(nn.Module):
    """An output matrix in row pieces; a slice of rows must start and end at piece edges."""

    def __init__(self, n_in: int, sizes: list[int]):
        super().__init__()
        self.pieces = nn.ModuleList(RowLinear(n_in, n) for n in sizes)
        self.edges = edges(sizes)

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        first, last = rows.start or 0, self.edges[-1] if rows.stop is None else rows.stop
        if first not in self.edges or last not in self.edges:
            raise ValueError(f"rows {first}:{last} cut through a piece; piece edges are {self.edges}")
        chosen = self.pieces[self.edges.index(first): self.edges.index(last)]
        return torch.cat([piece(x) for piece in chosen], dim=-1)


def output_matrix(n_in: int, segments: list[int], chunk: int) -> nn.Module:
    """The output matrix over consecutive vocabularies (`segments` rows each), each cut on its own so
    every segment's slice falls on piece edges."""
    if chunk <= 0 or sum(segments) <= chunk:
        return RowLinear(n_in, sum(segments))
    return RowLinearPieces(n_in, [n for rows in segments for n in piece_rows(rows, chunk)])


def whole_tables(model: nn.Module) -> tuple[dict[str, torch.Tensor], Callable[[str], tuple[str, int]]]:
    """Where each tensor of a model whose tables may be in pieces goes in the whole-table model.

    Returns `model`'s state dict with each pieced table's pieces replaced, where its first piece stood, by
    one tensor `<table>.weight` of the joined shape (empty, on the pieces' device: meta stays meta), and
    `place(name) -> (whole name, first row)`: a piece's rows start at its table's row `first row`; any other
    tensor keeps its name at row 0. An export writes each piece at its rows as it comes, so it never holds
    a table whole (weights/writers.py). A model without pieces maps to itself.
    """
    places: dict[str, tuple[str, int]] = {}
    rows: dict[str, int] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, (EmbeddingPieces, RowLinearPieces)):
            table = f"{prefix}." if prefix else ""
            starts = edges([piece.weight.shape[0] for piece in module.pieces])
            places.update({f"{table}pieces.{i}.weight": (f"{table}weight", start)
                           for i, start in enumerate(starts[:-1])})
            rows[f"{table}weight"] = starts[-1]
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        whole, first = places.get(name, (name, 0))
        if whole == name:
            state[name] = tensor
        elif first == 0:
            state[whole] = torch.empty(rows[whole], *tensor.shape[1:], dtype=tensor.dtype, device=tensor.device)
    return state, lambda name: places.get(name, (name, 0))
