"""One optimizer update: `grad_accum` micro-batches through the engine, losses averaged globally.

An update's micro-batches are read before the first of them runs, so that a loss dividing by a count
that varies between micro-batches gets the whole update's totals (megadalle.train.step_totals).
Plain engines run forward/backward/step per micro-batch (DeepSpeed steps the optimizer at the
accumulation boundary), or the task's own update (Task.update_runner: CLIP's loss over the whole
update), handed all its micro-batches, each moved to the device only as it is read (`OnDevice`: the device
holds one micro-batch's data, as it holds one micro-batch's activations); a PipelineEngine takes the whole
update in `train_batch`, pulling its micro-batches from the same iterator on the first and last stage (the
totals travel with the labels; a middle stage reads no data, and the first and last stages each sum
over their own data-parallel group, which reads the same micro-batches). The pipeline's loss sees only
(inputs, labels), so what a task reports from the batch itself (`loader_metrics`) is counted as
the micro-batches pass through that iterator, and averaged over the stage's data-parallel ranks; the parts of
its loss (the Transformer's text and image losses) come from the last stage with the loss itself
(megadalle.train.pipeline.loss_parts), averaged over micro-batches and ranks as the other layouts average them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Iterator

import torch

from megadalle.train.engine import Built
from megadalle.train.pipeline import loss_parts
from megadalle.train.step_totals import with_step_totals
from megadalle.train.task import Batch, DataPart, Task, loader_metrics


def to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Tensors to `device`; floating tensors also to the training dtype; containers recursively."""
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype=dtype if value.is_floating_point() else None, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device, dtype) for v in value)
    return value


class OnDevice(Sequence):
    """An update's micro-batches, each moved to the device when read, never all at once: a task's own update reads
    them one by one (gradient caching, twice: one more host-to-device copy per micro-batch for the memory of one)."""

    def __init__(self, batches: list[Batch], device: torch.device, dtype: torch.dtype):
        self.batches, self.device, self.dtype = batches, device, dtype

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return to_device(self.batches[index], self.device, self.dtype)


def mean_metrics(records: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over micro-batches' records (every record has the same keys)."""
    return {name: sum(r[name] for r in records) / len(records) for name in records[0]} if records else {}


def mean_over_ranks(values: dict[str, float], dp_world: int, device: torch.device, group=None) -> dict[str, float]:
    """Mean over data-parallel ranks (each rank's values are already its own mean; every rank has the same keys).
    `group`: the data-parallel process group (None: every rank is a data-parallel rank)."""
    if dp_world == 1:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, group=group)
    return {n: float(v) / dp_world for n, v in zip(names, t.tolist())}


class StepRunner:
    def __init__(self, task: Task, built: Built, part: DataPart, start_step: int):
        self.task, self.built, self.part = task, built, part
        self.batches: Iterator[Batch] = iter(task.batches(start_step, part))
        self.own_update = task.update_runner(part) if built.pipeline is None else None
        if built.pipeline is not None:
            self.pipe_iter = self._pipe_micro_batches()
            self.pipe_metrics: list[dict[str, float]] = []

    def _pipe_micro_batches(self) -> Iterator[Any]:
        while True:
            for batch in self._update_batches():
                self.pipe_metrics.append(loader_metrics(batch))
                yield to_device(self.built.pipeline.split(batch), self.built.device, self.built.dtype)

    def _update_batches(self) -> list[Batch]:
        """This rank's micro-batches of the next update, with the update's totals of the task's loss counts
        (a collective over the data-parallel group)."""
        batches = [next(self.batches) for _ in range(self.part.grad_accum)]
        return with_step_totals(self.task, batches, self.part.dp_world, self.built.device, self.built.dp_group)

    def update(self, step: int) -> dict[str, float]:
        if self.built.pipeline is not None:
            self.pipe_metrics.clear()
            loss = self.built.engine.train_batch(data_iter=self.pipe_iter)
            return {"loss": float(loss), **loss_parts(self.built.engine), **self._pipe_batch_metrics(),
                    **self._grad_norm()}
        engine = self.built.engine
        if self.own_update is not None:
            host = self._update_batches()
            metrics = self.own_update(engine, OnDevice(host, self.built.device, self.built.dtype), step)
            return {**self._all_mean({**metrics, **mean_metrics([loader_metrics(b) for b in host])}),
                    **self._grad_norm()}
        records = []
        for batch in self._update_batches():
            loss, metrics = engine(to_device(batch, self.built.device, self.built.dtype), step)
            engine.backward(loss)
            engine.step()
            records.append({"loss": loss.item(), **{name: float(value) for name, value in metrics.items()}})
        return {**self._all_mean(mean_metrics(records)), **self._grad_norm()}

    def _pipe_batch_metrics(self) -> dict[str, float]:
        """The batch metrics of this update's micro-batches, on the stages that read them (first and last):
        a middle stage reads none and reports none, the same on all its data-parallel ranks."""
        if not self.pipe_metrics or not self.pipe_metrics[0]:
            return {}
        return mean_over_ranks(mean_metrics(self.pipe_metrics), self.part.dp_world, self.built.device,
                               self.built.dp_group)

    def _all_mean(self, values: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(values, self.part.dp_world, self.built.device)

    def _grad_norm(self) -> dict[str, float]:
        norm = self.built.engine.get_global_grad_norm()
        return {} if norm is None else {"grad_norm": float(norm)}
