"""The training sample grid has a row per caption and a column per sample (train/sample_grid.py `SampleGrid`).

People read a grid across (one prompt's samples side by side) and down (how the prompts differ), and compare grids
of successive steps tile by tile. Tiled "about square" (make_grid's default) instead, 3 captions of 2 samples
became 2 rows of 3, each row mixing two prompts; the end-to-end test draws 2 captions of 3 samples, which the
square default also lays out as 2 x 3, so it could not tell. Here the sampler and the dVAE are stand-ins whose
tiles are flat colours naming (caption, sample), so every tile's place is checked against a hand-built layout.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from megadalle.train import sample_grid
from megadalle.train.sample_grid import SampleGrid

SIDE, PAD, GRID = 4, 2, 2


class Model(nn.Module):
    """What SampleGrid reads of a Transformer besides sampling it: its device and its text and grid sizes."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(text_len=3, grid_size=GRID)


class Tokenizer:
    """Caption "caption <r>" -> ids [r, 0, 0]."""

    def encode(self, caption: str, text_len: int) -> list[int]:
        return [int(caption.split()[1])] + [0] * (text_len - 1)


class DVAE:
    """Codes [N, g, g] -> images [N, 3, SIDE, SIDE] filled with code[0, 0] / 255, so the tile's pixels are its code."""

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes[:, :1, :1].float() / 255).expand(-1, SIDE, SIDE)[:, None].expand(-1, 3, -1, -1)


def code(r: int, c: int) -> int:
    """The colour of caption r's sample c (distinct for every tile, and never the white of the gutters)."""
    return 10 * (r + 1) + c


def fake_sample_many(model, text, n, batch_size, settings, seed):
    """Caption r's n samples: sample c is all code(r, c)."""
    r = int(text[0])
    return torch.tensor([[code(r, c)] * GRID * GRID for c in range(n)])


@pytest.mark.parametrize("captions,per_caption", [(3, 2), (2, 5), (1, 4)])
def test_row_r_column_c_is_caption_rs_sample_c(monkeypatch, captions, per_caption):
    """Shapes where the square default differs: 3 x 2 (it gives 3 columns), 2 x 5 (3 columns), 1 x 4 (2 columns)."""
    monkeypatch.setattr(sample_grid, "sample_many", fake_sample_many)
    grid = SampleGrid("unused.safetensors", "unused.json", [], captions, per_caption)
    grid._dvae, grid._tokenizer = DVAE(), Tokenizer()
    grid.captions = [f"caption {r}" for r in range(captions)]
    array = grid(Model()).array
    expected = np.full((captions * (SIDE + PAD) + PAD, per_caption * (SIDE + PAD) + PAD, 3), 255, np.uint8)
    for r in range(captions):
        for c in range(per_caption):
            top, left = PAD + r * (SIDE + PAD), PAD + c * (SIDE + PAD)
            expected[top:top + SIDE, left:left + SIDE] = code(r, c)
    assert array.shape == expected.shape, f"{captions} captions of {per_caption} samples laid out as {array.shape}"
    np.testing.assert_array_equal(array, expected)
