"""Random caption and image tokens at a model's shapes: `data=synthetic`, training without any files.

For benchmarks, scale rehearsals and cluster smoke tests, which need the real model, the real
trainer and the real batch shapes but no data set (and no tokenizer). Like the shard loader the
stream is a pure function of the step: sample j of global batch `step` comes from a generator
seeded by (seed, step, j), so a resumed run sees exactly what an uninterrupted one would, and
every layout (accumulation, data-parallel ranks, pipelines) sees the same global batch.

Captions get a random length in [1, text_len] and are padded after it with `text_pad_id`, so the
learned pad embeddings and the loss's pad masking run as with real captions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class TokenShape:
    """The model's token layout (megadalle.config.model.TransformerConfig's fields of the same names)."""

    text_len: int
    text_vocab: int
    text_pad_id: int
    grid_len: int
    image_vocab: int


def sample(shape: TokenShape, seed: int, step: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(text [text_len], image [grid_len]) of sample `index` of global batch `step`."""
    rng = np.random.default_rng([seed, step, index])
    length = int(rng.integers(1, shape.text_len + 1))
    words = rng.integers(0, shape.text_vocab - 1, size=length)
    words += words >= shape.text_pad_id  # every id but the pad's
    text = np.full(shape.text_len, shape.text_pad_id, dtype=np.int64)
    text[:length] = words
    image = rng.integers(0, shape.image_vocab, size=shape.grid_len, dtype=np.int64)
    return text, image


def micro_batch(shape: TokenShape, seed: int, step: int, reader: int, size: int) -> dict[str, torch.Tensor]:
    """Micro-batch `reader` (of `size` samples) of global batch `step`: samples reader*size ... + size - 1."""
    pairs = [sample(shape, seed, step, reader * size + j) for j in range(size)]
    return {"text": torch.from_numpy(np.stack([t for t, _ in pairs])),
            "image": torch.from_numpy(np.stack([i for _, i in pairs]))}


def token_batches(shape: TokenShape, seed: int, start_step: int, size: int,
                  readers: Sequence[int]) -> Iterator[dict[str, torch.Tensor]]:
    """From update `start_step` on, forever: for each update the micro-batches `readers` in that order
    (a rank's accumulation steps, megadalle.train.task.DataPart.reader)."""
    step = start_step
    while True:
        for reader in readers:
            yield micro_batch(shape, seed, step, reader, size)
        step += 1
