"""Bytes per parameter and per activation element of each training precision, and the GB every figure
is given in (10^9 bytes, as vendors quote memory)."""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter or activation element of one training precision."""

    name: str
    weight: int
    grad: int
    master: int
    adam: int
    act: int


BF16 = Precision("bf16", weight=2, grad=4, master=4, adam=8, act=2)
FP32 = Precision("fp32", weight=4, grad=4, master=4, adam=8, act=4)


def master_bytes(precision: Precision, zero: int) -> int:
    """Bytes per parameter of the fp32 master weights: none at ZeRO stage 0 in fp32, where torch's optimizer
    steps the weights themselves (DeepSpeed keeps no copy); bf16 at stage 0 keeps one (its BF16_Optimizer)."""
    return 0 if zero == 0 and precision.name == "fp32" else precision.master


def resident_master_bytes(precision: Precision, zero: int) -> int:
    """Bytes per parameter of the master weights a rank holds while training: `master_bytes`, except in
    fp32, where DeepSpeed's clone is freed once the engine is built and the master is the weights' own
    partition at every ZeRO stage (train/engine.py `share_fp32_masters`). The constructor still allocates
    the clone, and checkpoints still write the master, so construction and checkpoints count `master_bytes`."""
    return 0 if precision.name == "fp32" else master_bytes(precision, zero)
