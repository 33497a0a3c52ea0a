"""Where the optimizer keeps a parameter's fp32 master: the copy its next step starts from.

An edit between updates (train/param_edit.py) that misses the master is undone by the next step, which
writes the master back over the weights. Outside ZeRO-3 (whose partitions DeepSpeed reads and writes
through `safe_*_local_fp32_param`) the layouts DeepSpeed builds here are:

- ZeRO-1/2, and its BF16_Optimizer (bf16 with fp32 accumulation at stage 1, pipelines): each rank steps
  a fragment of a flat master, mapped by the parameter's `_hp_mapping` (None where the rank holds none).
- stage 0 in bf16 (bf16 accumulation): FP16_UnfusedOptimizer clones each weight into `fp32_groups`, paired
  with `fp16_groups`, and the torch optimizer inside keys Adam's state by those masters. (DeepSpeed's other wrapper,
  FP16_Optimizer, is built only around a fused Adam of apex's or DeepSpeed's, which megadalle never passes:
  engine.optimizer.)
- stage 0 in fp32: the torch optimizer steps the parameter itself.
"""
from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakKeyDictionary

import torch


def stage0_masters(optimizer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, its whole fp32 master) for every parameter a stage-0 optimizer steps: DeepSpeed's bf16 wrapper or a
    torch optimizer of fp32 parameters; nothing for ZeRO's optimizers. The master is the tensor the torch optimizer
    steps, and keys Adam's state by."""
    for weights, masters in _groups(optimizer):
        yield from zip(weights, masters)


def _groups(optimizer) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """(weights, their masters) of each group of a stage-0 optimizer: FP16_UnfusedOptimizer's fp32 clone of each
    weight, or a torch optimizer's parameters themselves."""
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    if isinstance(optimizer, FP16_UnfusedOptimizer):
        return list(zip(optimizer.fp16_groups, optimizer.fp32_groups))
    if isinstance(optimizer, torch.optim.Optimizer):
        return [(group["params"], group["params"]) for group in optimizer.param_groups]
    return []


_FOUND: WeakKeyDictionary = WeakKeyDictionary()
"""Per optimizer: (its `_layout` when its masters were found, {id(weight): its master}). CLIP clamps its logit
scale after every update (ParamEditor.clamp): a scan of every stage-0 master each step to find that one grew
with the model."""


def whole_master(param: torch.Tensor, optimizer) -> torch.Tensor | None:
    """`param`'s whole fp32 master at stage 0 (the tensor its torch optimizer steps and keys Adam's state by; edit it
    under no_grad); None under ZeRO or where the optimizer does not step it. Found once per optimizer, and again once
    its groups are other lists (`_layout`)."""
    layout = _layout(optimizer)
    if not layout:  # ZeRO's optimizers (or none): no whole master, nothing to keep
        return None
    found = _FOUND.get(optimizer)
    if found is None or not _same(found[0], layout):
        masters: dict[int, torch.Tensor] = {}
        for weight, master in stage0_masters(optimizer):
            masters.setdefault(id(weight), master)  # the first, as a scan finds it
        found = _FOUND[optimizer] = (layout, masters)
    return found[1].get(id(param))


def _layout(optimizer) -> list[tuple[list, int]]:
    """The lists (with their lengths) that `stage0_masters` reads: while they are the same, what it found in them
    stands, and the weights the lists hold keep their ids. A torch optimizer's add_param_group adds a group and its
    load_state_dict new ones (holding the same lists of parameters); DeepSpeed's bf16 wrapper loads a checkpoint
    into its masters in place."""
    return [(part, len(part)) for group in _groups(optimizer) for part in group]


def _same(before: list[tuple[list, int]], now: list[tuple[list, int]]) -> bool:
    return len(before) == len(now) and all(a is b and m == n for (a, m), (b, n) in zip(before, now))


def local_master(param: torch.Tensor, optimizer) -> torch.Tensor | None:
    """This rank's piece of `param`'s fp32 master outside ZeRO-3, a view of what the optimizer steps (edits of it
    last): the fragment ZeRO-1/2 map to this rank, or the whole at stage 0. None where the rank holds none of it."""
    if hasattr(param, "_hp_mapping"):
        return None if param._hp_mapping is None else param._hp_mapping.get_hp_fragment()
    master = whole_master(param, optimizer)
    return None if master is None else master.data


def torch_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside DeepSpeed's wrappers (or the optimizer itself): the one holding Adam's state."""
    return getattr(optimizer, "optimizer", optimizer)
