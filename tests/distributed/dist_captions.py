"""Global batches of the tiny Transformer whose micro-batches hold captions of very different lengths.

Update 0: samples 0-3 have 1 to 3 tokens (0 to 2 text targets), samples 4-7 14 to 16 (13 to 15): cut into 2
micro-batches they hold 4 and 58 kept text targets, cut into 4 they hold 1, 3, 30 and 28. Update 1: every caption
empty (no text target at all).
`micro_batches` serves a rank the micro-batches `DataPart.reader` assigns it, as the trainer's loaders do.
"""
from __future__ import annotations

from typing import Iterator

import torch

from megadalle.config.model import TransformerConfig
from megadalle.train.task import DataPart

GLOBAL_BATCH = 8
LENGTHS = {0: [2, 1, 3, 2, 16, 16, 14, 16], 1: [0] * GLOBAL_BATCH}


def global_batch(cfg: TransformerConfig, step: int) -> dict[str, torch.Tensor]:
    """Update `step`'s samples: random tokens (never the pad) up to each caption's length, pads after it."""
    g = torch.Generator().manual_seed(1000 + step)
    text = torch.randint(1, cfg.text_vocab, (GLOBAL_BATCH, cfg.text_len), generator=g)
    text[torch.arange(cfg.text_len) >= torch.tensor(LENGTHS[step])[:, None]] = cfg.text_pad_id
    image = torch.randint(0, cfg.image_vocab, (GLOBAL_BATCH, cfg.grid_len), generator=g)
    return {"text": text, "image": image}


def micro_batches(cfg: TransformerConfig, part: DataPart, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's micro-batches of updates `start_step`, `start_step` + 1, ... in accumulation order."""
    if part.global_batch != GLOBAL_BATCH:
        raise ValueError(f"the layout's global batch is {part.global_batch}, these batches hold {GLOBAL_BATCH}")
    for step in range(start_step, max(LENGTHS) + 1):
        batch = global_batch(cfg, step)
        for a in range(part.grad_accum):
            rows = slice(part.reader(a) * part.micro_batch, (part.reader(a) + 1) * part.micro_batch)
            yield {name: value[rows] for name, value in batch.items()}
