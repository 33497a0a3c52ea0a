"""Seeded construction per layer: a layer's initial weights depend only on (base seed, its index).

A pipeline stage builds only its own layers (megadalle.train.pipeline, from DeepSpeed LayerSpecs).
When the whole model seeds each top-level layer the same way, from one base drawn from torch's
global generator (which the trainer seeds identically on every rank), a stage that builds layers
5..9 alone gets exactly the weights the whole model has there: pipelined and plain runs start from
the same point, and their losses match step by step.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def draw_base_seed() -> int:
    """One draw from torch's global CPU generator: the base of a model's per-layer seeds.

    Drawn on the CPU explicitly, so a model built under `torch.device("meta")` (plan, export) can draw it.
    """
    return int(torch.randint(0, 2**62, (1,), device="cpu").item())


@contextmanager
def layer_seed(base: int, index: int) -> Iterator[None]:
    """Construct layer `index` under torch's generators seeded by `base + index` (restored afterwards)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(base + index)
        yield
