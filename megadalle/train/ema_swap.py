"""The EMA weights in the model for the time of a validation or a media grid, then the live weights back exactly.

Export and encode ship the EMA (train/consolidate.py), so the val/ curves and the pictures a researcher watches are
computed with it too (`ema_weights`); training then goes on with its live weights bit for bit.

The EMA is sharded (train/ema.py): data-parallel rank r holds only piece r of each parameter of its pipeline stage,
so a swap is a collective over the data-parallel group, which every rank of it enters:
- ZeRO 0-2 and pipelines, where every rank holds whole parameters: each rank backs up its own slice of each
  parameter, and the whole parameters are rebuilt by an all-gather of every rank's EMA piece (cast to the
  parameter's dtype), one parameter at a time;
- ZeRO-3: each rank writes its EMA piece into its partition (`param.ds_tensor`), which every forward gathers; the
  parameters DeepSpeed keeps gathered between forwards (persistent ones, below stage3_param_persistence_threshold)
  are rebuilt whole too, as DeepSpeed gathers them again after each optimizer step.
Leaving, the same with the backed-up slices puts the live weights back exactly. The optimizer's fp32 masters:
where they are the parameters' own storage (fp32 ZeRO 1-3, engine.share_fp32_masters) they take the EMA for the
time of the swap and get their exact values back with the parameters; where they are a separate copy (bf16) they
are never touched, and the next step copies from them into the parameters as always.

Cost: the backup is this rank's piece of each parameter in the training dtype, 1/dp of the stage's parameters
(2 bytes per parameter / dp in bf16); the all-gather holds one parameter's pieces at a time besides.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from megadalle.train.ema import EMA


@contextlib.contextmanager
def ema_weights(ema: EMA | None, dp_group=None) -> Iterator[None]:
    """The model's parameters hold the EMA for the block (collective over `dp_group`, None = every rank); the live
    weights are back, bit for bit, when it ends, even by an exception. No EMA: nothing to do."""
    if ema is None:
        yield
        return
    live = {name: piece.source().clone() for name, piece in ema.pieces.items()}
    install(ema, ema.shadow, dp_group)
    try:
        yield
    finally:
        install(ema, live, dp_group)


@torch.no_grad()
def install(ema: EMA, pieces: dict[str, torch.Tensor], dp_group) -> None:
    """Make each parameter of `ema` the one whose data-parallel pieces are every rank's `pieces` (collective)."""
    for name, param in ema.params:
        if hasattr(param, "ds_tensor"):  # ZeRO-3: the partition, and the whole parameter where DeepSpeed keeps it
            if name in pieces:
                ema.pieces[name].source().copy_(pieces[name])
            if gathered(param):
                _install_whole(param, pieces.get(name), ema.dp_world, dp_group)
        else:
            _install_whole(param, pieces.get(name), ema.dp_world, dp_group)


def gathered(param: torch.nn.Parameter) -> bool:
    """Whether DeepSpeed holds this ZeRO-3 parameter whole now (a persistent one, between forwards)."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return param.ds_status == ZeroParamStatus.AVAILABLE


def _install_whole(param: torch.nn.Parameter, piece: torch.Tensor | None, dp_world: int, dp_group) -> None:
    """`param` (whole on every rank) rebuilt from every rank's piece, padded to ceil(numel / dp_world) as
    ema.piece_range cuts it; `piece` is None on a rank that owns none of its elements."""
    flat = param.data.view(-1)
    size = math.ceil(flat.numel() / dp_world)
    local = torch.zeros(size, dtype=flat.dtype, device=flat.device)
    if piece is not None:
        local[:piece.numel()].copy_(piece)
    if dp_world == 1:
        flat.copy_(local)
        return
    parts = [torch.empty_like(local) for _ in range(dp_world)]
    torch.distributed.all_gather(parts, local, group=dp_group)
    flat.copy_(torch.cat(parts)[:flat.numel()])
