"""A tiny token-shard data set and tokenizer for training the `tiny` Transformer in tests.

Image codes follow the caption (code = word id pattern), so the loss has something to learn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from megadalle.data.shards import ShardWriter
from megadalle.data.tokenizer import train_tokenizer

WORDS = "red blue green cat dog bird tree car boat hill".split()


def make_token_data(root: Path, samples: int = 64, grid: int = 8, image_vocab: int = 128) -> tuple[Path, Path]:
    """(token shard directory, tokenizer model) under `root`."""
    rng = np.random.default_rng(0)
    captions = [" ".join(rng.choice(WORDS, size=3)) for _ in range(samples)]
    with ShardWriter(root / "captions") as w:
        for i in range(400):
            w.write({"__key__": f"{i:06d}", "txt": " ".join(rng.choice(WORDS, size=4))})
    train_tokenizer(root / "captions", root / "tok.model", vocab_size=40)
    with ShardWriter(root / "tokens", max_count=24) as w:
        for i, cap in enumerate(captions):
            base = sum(WORDS.index(word) for word in cap.split())
            codes = (base + np.arange(grid * grid)) % image_vocab
            w.write({"__key__": f"{i:06d}", "codes.npy": codes.reshape(grid, grid).astype(np.uint16), "txt": cap})
    return root / "tokens", root / "tok.model"
