"""GPT-2's initialisation, applied inside the __init__ of the module that owns each parameter.

N(0, 0.02) for every weight matrix and embedding, N(0, 0.02 / sqrt(2 * n_layers)) for the projections
that write into the residual stream, norms at identity, biases zero. DeepSpeed's ZeRO-3 construction
(`deepspeed.zero.Init`) partitions a module's parameters as soon as its __init__ returns, so an init
applied afterwards from the top would touch empty shards and silently leave the defaults. Every draw is made in
fp32 on the CPU (fp32_init.py), so a ZeRO-3 construction gets the plain one's weights.
"""
from __future__ import annotations

import math

from torch import nn

from megadalle.models.fp32_init import fp32_parameter, reset_in_fp32

INIT_STD = 0.02
"""GPT-2's standard deviation of every weight matrix and embedding."""


def residual_std(n_layers: int) -> float:
    """GPT-2's smaller init of the projections that write into the residual stream (2 per block)."""
    return INIT_STD / math.sqrt(2 * n_layers)


class Linear(nn.Linear):
    """nn.Linear initialised N(0, std) with a zero bias (its own reset_parameters)."""

    def __init__(self, n_in: int, n_out: int, std: float = INIT_STD, bias: bool = True):
        self.std = std
        super().__init__(n_in, n_out, bias=bias)

    def reset_parameters(self) -> None:
        reset_in_fp32(self, self._draw)

    def _draw(self) -> None:
        nn.init.normal_(self.weight, std=self.std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Embedding(nn.Embedding):
    """nn.Embedding initialised N(0, 0.02) instead of N(0, 1)."""

    def reset_parameters(self) -> None:
        reset_in_fp32(self, lambda: nn.init.normal_(self.weight, std=INIT_STD))


def normal_table(rows: int, d: int) -> nn.Parameter:
    return fp32_parameter((rows, d), lambda drawn: drawn.normal_(std=INIT_STD))
