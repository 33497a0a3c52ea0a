"""One optimizer update: `grad_accum` micro-batches through the engine, losses averaged globally.

Plain engines run forward/backward/step per micro-batch (DeepSpeed steps the optimizer at the
accumulation boundary); a PipelineEngine takes the whole update in `train_batch`, pulling its
micro-batches from the same iterator on the first and last stage.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from megadalle.train.engine import Built
from megadalle.train.task import Batch, DataPart, Task


def to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Tensors to `device`; floating tensors also to the training dtype; containers recursively."""
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype=dtype if value.is_floating_point() else None, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device, dtype) for v in value)
    return value


def mean_over_ranks(values: dict[str, float], dp_world: int, device: torch.device) -> dict[str, float]:
    """Mean over data-parallel ranks (each rank's values are already its own mean; every rank has the same keys)."""
    if dp_world == 1:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {n: float(v) / dp_world for n, v in zip(names, t.tolist())}


class StepRunner:
    def __init__(self, task: Task, built: Built, part: DataPart, start_step: int):
        self.task, self.built, self.part = task, built, part
        self.batches: Iterator[Batch] = iter(task.batches(start_step, part))
        if built.pipeline is not None:
            self.pipe_iter = (to_device(built.pipeline.split(b), built.device, built.dtype) for b in self.batches)

    def update(self, step: int) -> dict[str, float]:
        if self.built.pipeline is not None:
            loss = self.built.engine.train_batch(data_iter=self.pipe_iter)
            return {"loss": float(loss), **self._grad_norm()}
        engine = self.built.engine
        totals: dict[str, float] = {}
        for _ in range(self.part.grad_accum):
            batch = to_device(next(self.batches), self.built.device, self.built.dtype)
            loss, metrics = engine(batch, step)
            engine.backward(loss)
            engine.step()
            for name, value in {"loss": loss.item(), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + float(value) / self.part.grad_accum
        return {**self._all_mean(totals), **self._grad_norm()}

    def _all_mean(self, values: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(values, self.part.dp_world, self.built.device)

    def _grad_norm(self) -> dict[str, float]:
        norm = self.built.engine.get_global_grad_norm()
        return {} if norm is None else {"grad_norm": float(norm)}
