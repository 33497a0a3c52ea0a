"""A loss that is a mean over a count varying between micro-batches, as the mean over the whole update.

DeepSpeed averages an update's micro-batch losses over its accumulation steps and data-parallel ranks, every
micro-batch alike. That is the mean of the whole update only when every micro-batch's loss divides by the same
count. The Transformer's text loss divides by the kept (non-pad) text targets, which follow caption lengths: with
each micro-batch's own mean, a micro-batch of short captions weighs as much as one of long captions, and the
gradient is not the one of the update's samples taken as one batch (the "gradient accumulation loss bug").

So before an update the trainer sums each count a task names (`Task.loss_counts`) over the update's micro-batches
on this rank, adds them up across the data-parallel ranks (one small all-reduce per update; none for a task that
names no count) and hands every micro-batch the update's totals under `batch[STEP_TOTALS]`, with the number of
micro-batches DeepSpeed averages over. Dividing a micro-batch's sum by the update's count per micro-batch
(`per_micro_batch`) makes DeepSpeed's mean the sum over the update divided by its count. The reported metric gets
the same: the mean of the micro-batches' values, as the trainer logs it, is the update's true mean. Validation
gives its whole subset the same treatment (megadalle.train.validate).

The totals are integer tensors: the trainer casts floating tensors of a batch to the training dtype, and a count
in bf16 would be rounded.
"""
from __future__ import annotations

from typing import Sequence

import torch

from megadalle.train.task import Batch, Task

STEP_TOTALS = "step_totals"
"""The batch key of the totals: {count name: LongTensor, MICRO_BATCHES: LongTensor}."""
MICRO_BATCHES = "micro_batches"
"""The totals' entry holding how many micro-batches (all ranks) the counts were summed over."""


def with_step_totals(task: Task, batches: list[Batch], dp_world: int, device: torch.device, group=None) -> list[Batch]:
    """`batches` (this rank's micro-batches of one update, or of a validation subset: as many on every data-parallel
    rank) each with the totals of the task's counts over them and the other data-parallel ranks' (see the module
    docstring). Unchanged when the task names no count. A collective over `group` (None: every rank) when
    `dp_world` > 1: every data-parallel rank calls it at the same point."""
    counts = [task.loss_counts(batch) for batch in batches]
    if not counts or not counts[0]:
        return batches
    names = sorted(counts[0])
    sums = torch.tensor([sum(int(c[name]) for c in counts) for name in names], dtype=torch.int64, device=device)
    if dp_world > 1:
        torch.distributed.all_reduce(sums, group=group)
    totals = {name: int(value) for name, value in zip(names, sums.tolist())}
    totals[MICRO_BATCHES] = len(batches) * dp_world
    return [{**batch, STEP_TOTALS: {name: torch.tensor(value) for name, value in totals.items()}} for batch in batches]


def step_total(batch: Batch, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(the update's total of count `name`, the micro-batches it was summed over) handed to `batch`, or None (a batch
    alone, without totals)."""
    totals = batch.get(STEP_TOTALS)
    return None if totals is None else (totals[name], totals[MICRO_BATCHES])


def per_micro_batch(total: Sequence[torch.Tensor] | None) -> torch.Tensor | None:
    """The update's count per micro-batch from a `step_total` (a float, possibly below 1; 0 when the update has
    none): the divisor that makes DeepSpeed's mean over micro-batches the update's mean. None for None."""
    if total is None:
        return None
    count, micro_batches = total
    return count.float() / micro_batches
