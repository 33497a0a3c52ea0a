"""Validation during training: the task's loss on a fixed held-out subset every `trainer.eval_every` updates.

The subset is read once (the first `trainer.eval_batches` global batches of `task.validation_batches`, a seeded
permutation of the split, this rank's micro-batches of them) and kept on the device, so every evaluation scores the
same samples and the curve moves only when the model does. A split that ends (`task.validation_split`) is read at
most once over: fewer global batches where it holds fewer samples than asked for, said once when the run starts,
and a split smaller than one micro-batch on every rank is refused then (data/val_pass.py). Every micro-batch is
full, so the means over micro-batches below are means over samples. Each evaluation runs in eval mode under no_grad
with the RNG forked and seeded the same way (the dVAE's Gumbel noise, any sampling in a loss): it is a
deterministic function of the weights and it leaves the training RNG stream, hence resume, untouched.

Which weights: the model's at the call. The trainer calls it with the EMA swapped in when the run keeps one
(trainer.ema; train/ema_swap.py), so val/... is the EMA's, the weights export and encode ship, under the same
metric names; without an EMA, the live weights'.

Layouts: ZeRO 0-3 call the task's `validation_loss` (or its `validation_update`, below) on the engine's plain
model (ZeRO-3's hooks gather the parameters) and average over data-parallel ranks; a pipeline runs DeepSpeed's
`eval_batch` over all the cached micro-batches at once, which averages over micro-batches and data-parallel groups
and broadcasts to every stage, and reports the loss only (the other metrics stay inside the last stage).
A loss that divides by a count varying between micro-batches (the Transformer's kept text tokens) gets the
totals of the whole subset (megadalle.train.step_totals), so its mean is the subset's token mean.

A loss over the whole update (CLIP's contrast with `clip.negatives=update`, run by gradient caching) is validated
over each validation global batch's micro-batches together, as the training computes it (the task's
`validation_update`, grad_cache.evaluate, in place of `validation_loss`): a contrastive loss grows with the log of
the pairs it contrasts, so val/loss scored per micro-batch sat about ln(grad_accum) below the training loss at equal
skill. Where the split holds less than one global batch (fewer micro-batches, `one_pass`) the contrast is smaller
than the training's: the run says so when it starts and logs the pairs contrasted as val/contrast.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import replace

import torch

from megadalle.data.val_pass import one_pass
from megadalle.train.engine import Built
from megadalle.train.step_totals import with_step_totals
from megadalle.train.steps import mean_over_ranks, to_device
from megadalle.train.task import Batch, DataPart, Task, loader_metrics


@contextmanager
def seeded(seed: int, device: torch.device):
    """Run the block on a forked RNG seeded with `seed` (CPU, and the current CUDA device when used)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class Validator:
    """Evaluates `task` on its fixed validation subset; `run(step)` returns {"val/<metric>": mean}. Its lines start
    with `prefix`, the running verb's (`[train-dvae]`)."""

    def __init__(self, task: Task, built: Built, part: DataPart, every: int, batches: int, seed: int,
                 prefix: str = "[train]"):
        self.task, self.built, self.part, self.prefix = task, built, part, prefix
        self.every, self.global_batches, self.seed = every, batches, seed
        self._cache: list[Batch] | None = None
        plain = every and built.pipeline is None  # a pipeline's engine runs its updates: it never asks for a runner
        self.whole_update = task.validation_update(part) if plain else None
        self.contrast: int | None = None
        if every:
            self.part, self.global_batches = self._one_pass(part, batches)
            if self.whole_update is not None:
                self.contrast = self._contrast(part)

    def _one_pass(self, part: DataPart, batches: int) -> tuple[DataPart, int]:
        """The part and the global batches that read the task's split at most once over (as asked, for a stream
        without end); a split too small is refused here, before the first update."""
        split = self.task.validation_split()
        if split is None:
            return part, batches
        shards, total = split
        reading = one_pass(part.micro_batch, part.grad_accum, part.dp_world, batches, total, shards,
                           self.task.contrastive)
        if reading.shortfall and self.built.engine.global_rank == 0:
            print(f"{self.prefix} validation: {reading.shortfall}", flush=True)
        return replace(part, grad_accum=reading.grad_accum), reading.batches

    def _contrast(self, training: DataPart) -> int | None:
        """The pairs each validation loss contrasts where fewer than the training's (a split smaller than one
        global batch reads fewer micro-batches: `_one_pass`), said once here; None where they are as many."""
        pairs = self.part.micro_batch * self.part.grad_accum * self.part.dp_world
        if self.part.grad_accum == training.grad_accum:
            return None
        if self.built.engine.global_rank == 0:
            print(f"{self.prefix} validation: each loss contrasts {pairs} pairs, the training's "
                  f"{training.global_batch}: val/loss is lower by about ln({training.global_batch}/{pairs}) at "
                  "equal skill (val/contrast logs it)", flush=True)
        return pairs

    def due(self, step: int) -> bool:
        """After update index `step` (0-based), as `trainer.media_every` counts."""
        return bool(self.every) and (step + 1) % self.every == 0

    def batches(self) -> list[Batch]:
        """This rank's cached validation micro-batches on the device (empty: the task has no validation data)."""
        if self._cache is None:
            stream = self.task.validation_batches(self.part)
            count = self.global_batches * self.part.grad_accum
            raw = [] if stream is None else list(itertools.islice(stream, count))
            raw = with_step_totals(self.task, raw, self.part.dp_world, self.built.device, self.built.dp_group)
            self._cache = [to_device(b, self.built.device, self.built.dtype) for b in raw]
            if not raw and self.built.engine.global_rank == 0:
                print(f"{self.prefix} no validation data for the {self.task.name} task ({self.task.no_validation()}); "
                      "val/ metrics are not logged", flush=True)
        return self._cache

    def run(self, step: int) -> dict[str, float]:
        batches = self.batches()
        if not batches:
            return {}
        with torch.no_grad(), seeded(self.seed, self.built.device):
            values = self._pipeline(batches) if self.built.pipeline is not None else self._plain(batches, step)
        return {f"val/{name}": value for name, value in values.items()}

    def _plain(self, batches: list[Batch], step: int) -> dict[str, float]:
        module = self.built.engine.module
        module.eval()
        try:
            totals: dict[str, float] = {}
            scored = [self._scored(batches[i:i + self.part.grad_accum], step)
                      for i in range(0, len(batches), self.part.grad_accum)] if self.whole_update else \
                [self.task.validation_loss(self.built.model, batch, step) for batch in batches]
            for metrics in scored:
                for name, value in metrics.items():
                    totals[name] = totals.get(name, 0.0) + float(value) / len(scored)
        finally:
            module.train()
        contrast = {} if self.contrast is None else {"contrast": float(self.contrast)}
        return {**mean_over_ranks(totals, self.part.dp_world, self.built.device), **contrast,
                **self.task.validation_summary(self.built.device)}

    def _scored(self, update: list[Batch], step: int) -> dict[str, float]:
        """The metrics of one validation global batch's micro-batches on this rank, contrasted together as the
        training's update is (`whole_update`), with the loaders' shares averaged over them."""
        shares = [loader_metrics(batch) for batch in update]
        return {**self.whole_update(self.built.model, update, step),
                **{name: sum(share[name] for share in shares) / len(shares) for name in shares[0]}}

    def _pipeline(self, batches: list[Batch]) -> dict[str, float]:
        split = self.built.pipeline.split
        loss = self.built.engine.eval_batch(iter([split(b) for b in batches]), num_micro_batches=len(batches))
        return {"loss": float(loss)}
