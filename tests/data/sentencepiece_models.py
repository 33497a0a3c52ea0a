"""Sentencepiece models trained outside megadalle, on random captions: what a user may bring as `tokenizer=`.

A helper, not a test module: the tokenizer's tests and the refusals of `train` and `generate` build such models
alike, and none of those test modules should be another's library.
"""
from __future__ import annotations

import io

import numpy as np
import sentencepiece as spm

from tests.data.conftest import caption


def sp_model(captions: list[str], **options) -> bytes:
    """A sentencepiece model trained outside megadalle (megadalle's special ids unless `options` change them)."""
    buf = io.BytesIO()
    options = {"model_type": "bpe", "vocab_size": 64, "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3, **options}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=buf, hard_vocab_limit=False,
                                   minloglevel=2, **options)
    return buf.getvalue()


def captions(n: int = 500, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [caption(rng) for _ in range(n)]
