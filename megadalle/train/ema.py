"""Exponential moving average of the weights (the paper's iterate averaging, decay 0.99 / 0.999).

Tracks, in fp32, only the parameters this rank trains: all of them under ZeRO 0-2, the local
stage's under pipeline parallelism. ZeRO-3 shards parameters, so it is refused there (config error).
Saved per rank as safetensors named like the plain model, so export can merge the stage files.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, trained: set[int], decay: float):
        self.decay = decay
        self.params = {name: p for name, p in model.named_parameters() if id(p) in trained}
        self.shadow = {name: p.detach().float().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.shadow.items()}, str(path))

    def load(self, path: Path) -> None:
        stored = load_file(str(path))
        if set(stored) != set(self.shadow):
            raise ValueError(f"EMA file {path} holds other parameters than this rank trains")
        for name, value in stored.items():
            self.shadow[name].copy_(value)
