"""Each stream position draws its own randomness, the same whenever it is drawn (data/batches.py `sample_rng`).

BPE dropout and the choice among a sample's captions are seeded by (seed, position): a stream shared by all
positions would give every sample of every epoch the same segmentation draw and the same caption line (the 10%
dropout and the caption choice would vary nothing between samples), and a stream not fixed by the position would
give a resumed run or another worker count other batches than the uninterrupted run.
"""
from __future__ import annotations

import io

import numpy as np

from megadalle.data.batches import TokenBatches

LONG = "the small red cat sits on the green mat near the big blue house under the sky"
LINES = [f"{word} cat sits on the mat" for word in "red blue green small big dog bird tree car boat".split()]


def sample(text: str) -> dict:
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2), np.uint16))
    return {"__key__": "000001", "txt": text.encode(), "codes.npy": buf.getvalue()}


def rows(tokenizer, text: str, positions, seed: int = 0, dropout: float = 0.0) -> list[tuple[int, ...]]:
    """The token rows TokenBatches makes for one sample read at each of `positions`."""
    batch = TokenBatches(tokenizer, 40, dropout)([sample(text)] * len(positions), np.asarray(positions), seed)
    return [tuple(r) for r in batch["text"].tolist()]


def test_bpe_dropout_differs_between_positions_and_repeats_at_one(tokenizer):
    """One caption read at 16 positions with dropout 0.5: many segmentations; the same positions read again, in
    another order and batch, the same ones; another seed, others."""
    positions = list(range(100, 116))
    first = rows(tokenizer, LONG, positions, dropout=0.5)
    assert len(set(first)) >= 8, f"only {len(set(first))} segmentations over 16 positions"
    again = rows(tokenizer, LONG, positions[::-1], dropout=0.5)[::-1]
    assert again == first
    assert [rows(tokenizer, LONG, [p], dropout=0.5)[0] for p in positions[:3]] == first[:3]
    assert rows(tokenizer, LONG, positions, seed=1, dropout=0.5) != first


def test_the_caption_line_differs_between_positions_and_repeats_at_one(tokenizer):
    """A sample of 10 caption lines read at 20 positions without dropout picks several lines, each position its
    own line every time."""
    text = "\n".join(LINES)
    positions = list(range(20))
    first = rows(tokenizer, text, positions)
    assert len(set(first)) >= 4, f"only {len(set(first))} caption lines picked over 20 positions"
    assert rows(tokenizer, text, positions[::-1])[::-1] == first
