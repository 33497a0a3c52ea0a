"""The captions of a sample's `txt` field: its non-blank lines, stripped, one caption each.

One rule for every reader (training's seeded choice of caption, `evaluate`'s shard captions, the training
sample grid): a blank or space-padded line is no caption anywhere, so a grid never shows, and evaluate never
scores, a caption the model did not learn from.
"""
from __future__ import annotations


def caption_lines(text: str) -> list[str]:
    """The captions of a `txt` field, in order."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def first_caption(text: str) -> str:
    """The first caption of a `txt` field ("" when it has none)."""
    lines = caption_lines(text)
    return lines[0] if lines else ""
