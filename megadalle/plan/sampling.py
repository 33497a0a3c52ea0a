"""What `generate` holds on one GPU for a model, for `plan`: the sampling side of the memory question.

Training layouts shard the model; sampling does not: one GPU holds the whole Transformer in bf16
(generate's dtype=auto on GPUs) and each sample's cache (megadalle.sampling.memory). At the 12B that
is 24.6 GB plus 1.33 GB per sample, so the batch that fits is the figure a user needs before a run.
"""
from __future__ import annotations

import torch

from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.sample import GenerateConfig
from megadalle.plan.counts import Counts
from megadalle.plan.memory import budget
from megadalle.plan.precision import GB
from megadalle.sampling.memory import decoder_bytes

def sampling_batch(model: TransformerConfig, counts: Counts, plan: PlanConfig) -> tuple[float, float, int]:
    """(bf16 weights bytes, cache bytes per sample, largest batch within the GPU's usable memory)."""
    weights = 2.0 * counts.total
    per_sample = float(decoder_bytes(model, 1, torch.bfloat16))
    room = budget(plan) - plan.runtime_gb * GB - weights
    return weights, per_sample, max(int(room // per_sample), 0)


def sampling_line(model: TransformerConfig, counts: Counts, plan: PlanConfig) -> str:
    weights, per_sample, batch = sampling_batch(model, counts, plan)
    default = GenerateConfig.batch_size
    verdict = (f"batch_size up to {batch}" if batch else "the weights alone do not fit") + \
        f" (generate's default {default} {'fits' if batch >= default else 'does not'})"
    return (f"  sampling (generate, one GPU, bf16): weights {weights / GB:.1f} GB + cache {per_sample / GB:.2f} GB "
            f"per sample: {verdict}")
