"""Turn decoded shard samples into training batches: images for the dVAE/CLIP, tokens for the Transformer.

A batch maker runs inside the DataLoader worker. It gets the samples of one rank's part of a
step together with their stream positions; any randomness (which caption of several, BPE
dropout) is seeded by (seed, position), so a batch is the same whichever worker, rank count or
resume point produced it.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from megadalle.data.images import resize_center_crop, to_tensor


class BatchMaker(Protocol):
    fields: tuple[str, ...]
    """Shard fields to read and decode; nothing else in a sample is touched."""

    def __call__(self, samples: list[dict[str, Any]], positions: np.ndarray, seed: int) -> dict[str, Any]: ...


def sample_rng(seed: int, position: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, int(position)])


def pick_caption(text: str, rng: np.random.Generator) -> str:
    """One caption of a `txt` field holding several, one per line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[int(rng.integers(len(lines)))] if len(lines) > 1 else lines[0]


class ImageBatches:
    """dict(image=FloatTensor[B, 3, S, S] in [0, 1], caption=list[str], key=list[str])."""

    def __init__(self, image_size: int, image_field: str = "jpg"):
        self.image_size, self.fields = image_size, (image_field, "txt")

    def __call__(self, samples, positions, seed):
        images, captions = [], []
        for sample, pos in zip(samples, positions):
            images.append(to_tensor(resize_center_crop(sample[self.fields[0]], self.image_size)))
            captions.append(pick_caption(sample["txt"], sample_rng(seed, pos)))
        return {"image": torch.stack(images), "caption": captions, "key": [s["__key__"] for s in samples]}


class TokenBatches:
    """dict(text=LongTensor[B, text_len], image=LongTensor[B, H*W]) from `codes.npy` + `txt`.

    The caption is tokenized here, not at encode time, so BPE dropout draws fresh segmentations
    every epoch (the paper's 10%), reproducibly: the draw is seeded by (seed, position).
    """

    fields = ("codes.npy", "txt")

    def __init__(self, tokenizer, text_len: int, dropout: float = 0.0):
        self.tokenizer, self.text_len, self.dropout = tokenizer, text_len, dropout

    def __call__(self, samples, positions, seed):
        texts, codes = [], []
        for sample, pos in zip(samples, positions):
            rng = sample_rng(seed, pos)
            caption = pick_caption(sample["txt"], rng)
            texts.append(self.tokenizer.encode(caption, self.text_len, dropout=self.dropout,
                                               seed=int(rng.integers(1 << 31))))
            grid = sample["codes.npy"]
            if grid.ndim != 2 or (codes and grid.size != codes[0].size):
                raise ValueError(f"sample {sample['__key__']!r}: codes.npy has shape {grid.shape}; "
                                 f"expected one [H, W] grid size for every sample")
            codes.append(grid.reshape(-1).astype(np.int64))
        return {"text": torch.tensor(texts, dtype=torch.long), "image": torch.from_numpy(np.stack(codes))}
