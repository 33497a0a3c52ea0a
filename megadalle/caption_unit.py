"""Means over captions, with their standard error: the caption is the unit.

A caption's samples share its errors (a model that paints a yellow square orange does so in most of that
caption's samples), so they are not independent draws: a spread over samples would shrink with the samples drawn
per caption while the figure, set by how few captions there are, stays as uncertain. The demo's accuracy
(demo_score), learning_check's and evaluate's CLIP score all take their standard error over captions here.
"""
from __future__ import annotations

import math


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample sd / sqrt(n)); None when one value cannot give a spread."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
