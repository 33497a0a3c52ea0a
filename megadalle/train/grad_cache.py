"""Gradient caching (Gao et al. 2021): a loss over the whole update's outputs, trained a micro-batch at a time.

A contrastive loss couples every row of its batch, so accumulating the gradients of per-micro-batch losses
contrasts each micro-batch with itself alone. Gradient caching cuts the chain rule at the model's outputs:
1. each micro-batch forward without grad: its outputs (no activations kept);
2. the loss over all of them, concatenated as leaves: its value and its gradient with respect to each output;
3. each micro-batch forward again with grad, and backward of <outputs, their cached gradient>, which is that
   micro-batch's share of the loss's gradient.
It holds one micro-batch's activations plus the update's outputs, for one more forward per micro-batch.

Scaling. DeepSpeed divides each micro-batch's backward by the accumulation steps A and averages the ranks'
gradients. The loss of a rank is its rows' mean against the rows of every rank (models/clip.py
`contrastive_loss`), and the gather's backward hands each rank the gradient of the sum of all ranks' losses
with respect to its rows; the mean of the ranks' losses is the single-process loss of the global batch. So the
surrogate A * <rows, cached gradient> of each micro-batch gives, after both, that loss's gradient. A 0-dim
output (CLIP's logit scale) is a function of the parameters alone, the same in every micro-batch: the loss reads
the first micro-batch's, and each micro-batch backs its term up once, A of them divided by A making one.

Both forwards must compute the same function: the model draws no random numbers (CLIP has no dropout), and
the optimizer steps only after the last micro-batch's backward.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import nn

from megadalle.train.task import Batch

Encode = Callable[[nn.Module, Batch, int], tuple[torch.Tensor, ...]]
"""(model, micro-batch, step) -> outputs: tensors of one row per sample, or 0-dim ones shared by all."""
Loss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
"""(*outputs of the whole update, concatenated) -> (scalar loss, metrics)."""
Inputs = Callable[[Sequence[Batch]], dict[str, Any]]
"""(the update's micro-batches) -> keyword arguments of `Loss` read from the batches themselves, without gradients."""


def update(engine: Any, batches: Sequence[Batch], step: int, encode: Encode, loss: Loss,
           inputs: Inputs | None = None) -> dict[str, float]:
    """Run one update of this rank's `batches` through the DeepSpeed `engine` under `loss` of the whole update
    (the same call on every rank: `loss` may gather over them); returns this rank's loss as `loss` and its
    metrics. `inputs` gives `loss` keyword arguments read from the batches themselves, without gradients (CLIP's
    token ids, for its accuracy, and sample ids, for the repeats its contrast leaves out), rows in the order of the
    concatenated outputs."""
    with torch.no_grad():
        cached = [engine(batch, step, run=encode) for batch in batches]
    leaves = [joined(outputs).detach().float().requires_grad_() for outputs in zip(*cached)]
    value, metrics = whole_loss(loss, leaves, batches, inputs)
    grads = torch.autograd.grad(value, leaves)
    shares = zip(*(split(grad, outputs) for grad, outputs in zip(grads, zip(*cached))))
    accum = engine.gradient_accumulation_steps()
    for batch, share in zip(batches, shares):
        engine.backward(engine(batch, step, run=partial(surrogate, encode, share, accum)))
        engine.step()
    return metrics


def evaluate(model: nn.Module, batches: Sequence[Batch], step: int, encode: Encode, loss: Loss,
             inputs: Inputs | None = None) -> dict[str, float]:
    """`update`'s metrics of these micro-batches, `loss` among them, without gradients (the caller's no_grad) or a
    step: a validation contrasting what the training contrasts (a task's `validation_update`, train/validate.py)."""
    outputs = [encode(model, batch, step) for batch in batches]
    return whole_loss(loss, [joined(output).float() for output in zip(*outputs)], batches, inputs)[1]


def whole_loss(loss: Loss, outputs: Sequence[torch.Tensor], batches: Sequence[Batch],
               inputs: Inputs | None) -> tuple[torch.Tensor, dict[str, float]]:
    """`loss` of the update's joined `outputs` with the keyword arguments `inputs` reads from its `batches`: its
    value, and the metrics `update` and `evaluate` return, `loss` among them."""
    value, metrics = loss(*outputs, **(inputs(batches) if inputs else {}))
    return value, {"loss": value.item(), **metrics}


def joined(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One output of every micro-batch: rows concatenated, a 0-dim output the first micro-batch's."""
    return outputs[0] if outputs[0].dim() == 0 else torch.cat(outputs)


def split(grad: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The gradient of a joined output cut back into each micro-batch's share (a 0-dim one: all of it each)."""
    if grad.dim() == 0:
        return [grad] * len(outputs)
    return list(grad.split([output.shape[0] for output in outputs]))


def surrogate(encode: Encode, grads: tuple[torch.Tensor, ...], accum: int, model: nn.Module, batch: Batch,
              step: int) -> torch.Tensor:
    """The scalar whose backward (divided by the `accum` steps) is this micro-batch's share of the update loss's
    gradient: its outputs, recomputed with grad, dotted with their cached gradients."""
    terms = [(output.float() * grad).sum() * (1 if output.dim() == 0 else accum)
             for output, grad in zip(encode(model, batch, step), grads)]
    return torch.stack(terms).sum()
