"""Pipeline parallelism: the task's layers as a DeepSpeed PipelineModule built from LayerSpecs.

No second definition of the model: the task's PipelineSpec lists recipes (`LayerSpec`s) of the plain
model's own layer classes, and DeepSpeed builds on each rank only the layers of its stage, so no
rank constructs, or keeps, a layer it does not train. Layer i is built under seed base + i, as the
plain model builds its top-level layers (megadalle.models.seeding): every layout starts from the
same weights. `partition_method="type:Block"` balances the stages by counting layers whose class
name matches (the Transformer blocks), so the embedding and head ride along with the first and last
stage instead of counting as a block. `partition_method="parameters"` balances parameter counts;
DeepSpeed counts them by building every layer on every rank, which we let it do on the meta device
(no memory, no initialisation: at the 12B it would otherwise initialise all 12B parameters on each
rank's CPU before training).

Activation checkpointing recomputes one layer at a time in the backward, only layers the spec names
`checkpointable` (the blocks) and with torch's non-reentrant checkpoint: DeepSpeed's default
(reentrant) checkpoint over the first stage's integer token inputs leaves the embedding without
gradients and crashes stage 0's backward.

A loss of named parts (`LossWithParts`: the Transformer's text and image losses) reports them through DeepSpeed's
`get_additional_losses`: after each micro-batch's forward the last stage's engine adds them up as it adds up the
loss, divides by the accumulation steps, averages over its data-parallel group and broadcasts them to the other
stages with the loss, so every rank reads the update's parts (`loss_parts`) exactly as it reads its loss.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from megadalle.config.train import DeepSpeedConfig
from megadalle.models.seeding import draw_base_seed, layer_seed
from megadalle.train.task import PipelineSpec


def seeded_spec(spec, seed_base: int, index: int):
    """A LayerSpec that builds `spec`'s layer under seed `seed_base + index`."""
    from deepspeed.pipe import LayerSpec

    class SeededLayerSpec(LayerSpec):
        def build(self, log=False):
            with layer_seed(seed_base, index):
                return super().build(log)

    return SeededLayerSpec(spec.typename, *spec.module_args, **spec.module_kwargs)


def pipeline_module(spec: PipelineSpec, ds: DeepSpeedConfig):
    """A PipelineModule over `spec.layers` with `ds.pipeline_stages` stages (call after distributed init)."""
    from deepspeed.pipe import PipelineModule

    class MetaCountingPipelineModule(PipelineModule):
        def _count_layer_params(self):  # DeepSpeed builds each layer to count its parameters
            with torch.device("meta"):
                return super()._count_layer_params()

        def get_additional_losses(self):
            return self.loss_fn.latest if isinstance(self.loss_fn, LossWithParts) else None

    base = draw_base_seed()  # the plain model's first draw: same base, same per-layer weights
    layers = [seeded_spec(layer, base, i) for i, layer in enumerate(spec.layers)]
    return MetaCountingPipelineModule(layers=layers, loss_fn=spec.loss_fn, num_stages=ds.pipeline_stages,
                                      partition_method=ds.partition_method,
                                      activation_checkpoint_interval=1 if spec.activation_checkpointing else 0,
                                      activation_checkpoint_func=functools.partial(checkpoint, use_reentrant=False),
                                      checkpointable_layers=list(spec.checkpointable))


class LossWithParts:
    """A pipeline's `loss_fn` whose loss is made of named parts, reported beside it (see the module docstring).

    `loss_fn(outputs, labels)` returns (loss, {name: 0-dim part} for each of `names`). Called as DeepSpeed calls
    a loss_fn, it returns the loss and keeps the parts of this micro-batch in `latest`; a stage that computes no
    loss keeps zeros there, which DeepSpeed reads only for the names and their order (that of `names` on every
    stage).
    """

    def __init__(self, loss_fn: Callable[[Any, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                 names: tuple[str, ...]):
        self.loss_fn, self.names = loss_fn, names
        self.latest = {name: torch.zeros(()) for name in names}

    def __call__(self, outputs, labels) -> torch.Tensor:
        loss, parts = self.loss_fn(outputs, labels)
        self.latest = {name: parts[name].detach().float() for name in self.names}
        return loss


def loss_parts(engine) -> dict[str, float]:
    """The parts of the last `train_batch`'s loss (a `LossWithParts`), averaged as its loss is: over the update's
    micro-batches and the data-parallel group; the same on every rank. Empty for a loss without parts."""
    parts = engine.agg_additional_losses
    return {} if parts is None else {name: float(value) for name, value in parts.items()}


def stage_view(module: nn.Module, layer_names: list[str]) -> nn.Module:
    """This stage's layers (the very modules DeepSpeed trains) at their plain-model paths.

    Its named_parameters() are the plain model's names of the parameters this stage owns, so what is
    keyed by name (the EMA, export) is the same for pipelined and plain runs.
    """
    view = nn.Module()
    for key, layer in module.named_children():
        if key.isdigit():  # DeepSpeed registers built layer i as str(i)
            *parents, leaf = layer_names[int(key)].split(".")
            node = view
            for name in parents:
                if not hasattr(node, name):
                    node.add_module(name, nn.Module())
                node = getattr(node, name)
            node.add_module(leaf, layer)
    return view
