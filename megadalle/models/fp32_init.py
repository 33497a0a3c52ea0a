"""Initial weights drawn in fp32 on the CPU, whatever dtype and device the parameters are built in.

A plain construction builds the model in fp32 on the CPU and casts it to the training dtype afterwards. ZeRO-3
builds inside `deepspeed.zero.Init`, which creates every parameter in the training dtype on the accelerator, and
torch's random init draws other numbers there: in bf16 (a tensor whose size is no multiple of the vectorised
kernel's width draws another sequence, which shifts every later draw) and from a GPU's generator. The same seed
then gave ZeRO-3 another model: CLIP's first loss was 2.450 in bf16 against 2.378 for every other layout.
Drawn on an fp32 CPU tensor of the parameter's shape and copied in (cast once, as the plain model is), every
layout starts from the same weights; the plain construction draws exactly what it drew before.

`Tensor.new_empty` is not among the constructors zero.Init redirects, so the fp32 tensor stays fp32 on the CPU
there too. The cost: every rank draws every parameter on the CPU, as a plain construction does (~190M draws/s on 2
CPU threads, about a minute per rank for the 12B, not measured on a GPU node); before, ZeRO-3 drew them on the GPU.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _fp32_twin(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.new_empty(tensor.shape, dtype=torch.float32, device="cpu")


def reset_in_fp32(module: nn.Module, reset: Callable[[], None]) -> None:
    """Run `reset` (the module's initialisation of its own parameters) on fp32 CPU stand-ins of them, then copy
    the values into the parameters."""
    built = {name: p.data for name, p in module.named_parameters(recurse=False)}
    if any(data.is_meta for data in built.values()):  # plan's and export's shapes: nothing to draw
        reset()
        return
    with torch.no_grad():
        for name, data in built.items():
            getattr(module, name).data = _fp32_twin(data)
        try:
            reset()
        finally:
            for name, data in built.items():
                param = getattr(module, name)
                drawn, param.data = param.data, data
                data.copy_(drawn)


def fp32_parameter(shape: tuple[int, ...], init: Callable[[torch.Tensor], object]) -> nn.Parameter:
    """A parameter of `shape` (built as its constructor builds it: under zero.Init in the training dtype) holding
    `init` applied to an fp32 CPU tensor, as in `reset_in_fp32`."""
    param = nn.Parameter(torch.empty(shape))
    if param.is_meta:
        return param
    drawn = _fp32_twin(param.data)
    with torch.no_grad():
        init(drawn)
        param.data.copy_(drawn)
    return param


class Linear(nn.Linear):
    """nn.Linear with torch's default initialisation, drawn in fp32 (`reset_in_fp32`)."""

    def reset_parameters(self) -> None:
        reset_in_fp32(self, super().reset_parameters)


class Conv2d(nn.Conv2d):
    """nn.Conv2d with torch's default initialisation, drawn in fp32 (`reset_in_fp32`)."""

    def reset_parameters(self) -> None:
        reset_in_fp32(self, super().reset_parameters)


class Embedding(nn.Embedding):
    """nn.Embedding with torch's default initialisation, drawn in fp32 (`reset_in_fp32`)."""

    def reset_parameters(self) -> None:
        reset_in_fp32(self, super().reset_parameters)
