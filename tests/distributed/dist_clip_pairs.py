"""Global batches of random image-caption pairs for the tiny CLIP, served per rank as the trainer's loaders do.

`micro_batches` serves a rank the micro-batches `DataPart.reader` assigns it, for update 0 only.
"""
from __future__ import annotations

from typing import Iterator

import torch

from megadalle.config.clip import ClipConfig
from megadalle.train.task import DataPart


def global_batch(cfg: ClipConfig, size: int) -> dict[str, torch.Tensor]:
    """`size` pairs: random images in [0, 1], captions of 1 to text_len random tokens (never the pad), pads after;
    each its own sample (the loader's ids)."""
    g = torch.Generator().manual_seed(2000 + size)
    image = torch.rand(size, 3, cfg.image_size, cfg.image_size, generator=g)
    text = torch.randint(1, cfg.text_vocab, (size, cfg.text_len), generator=g)
    lengths = torch.randint(1, cfg.text_len + 1, (size, 1), generator=g)
    text[torch.arange(cfg.text_len) >= lengths] = cfg.text_pad_id
    return {"image": image, "text": text, "sample": torch.arange(size)}


def micro_batches(cfg: ClipConfig, part: DataPart) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's micro-batches of update 0 in accumulation order."""
    batch = global_batch(cfg, part.global_batch)
    for a in range(part.grad_accum):
        rows = slice(part.reader(a) * part.micro_batch, (part.reader(a) + 1) * part.micro_batch)
        yield {name: value[rows] for name, value in batch.items()}
