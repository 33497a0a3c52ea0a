"""Pipeline parallelism: the task's own layers as a DeepSpeed PipelineModule.

No second definition of the model: the PipelineModule holds the very modules of the plain
model (embedding, blocks, head) in execution order, and DeepSpeed keeps on each rank only the
layers of its stage. `partition_method="type:Block"` balances the stages by counting layers whose
class name matches (the Transformer blocks), so the embedding and head ride along with the first
and last stage instead of counting as a block.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from megadalle.config.train import DeepSpeedConfig
from megadalle.train.task import PipelineSpec


class Unpack(nn.Module):
    """Calls `module(*inputs)`: a pipeline passes one value (here a tuple) from layer to layer."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, inputs: Any):
        return self.module(*inputs)


def pipeline_module(spec: PipelineSpec, ds: DeepSpeedConfig):
    """A PipelineModule over `spec.layers` with `ds.pipeline_stages` stages (call after distributed init)."""
    from deepspeed.pipe import PipelineModule

    return PipelineModule(layers=spec.layers, loss_fn=spec.loss_fn, num_stages=ds.pipeline_stages,
                          partition_method=ds.partition_method,
                          activation_checkpoint_interval=ds.pipe_activation_checkpoint_interval)
