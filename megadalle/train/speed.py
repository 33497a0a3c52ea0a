"""Throughput, MFU and memory, added to every update's metrics.

MFU (model FLOPs utilisation, PaLM appendix B):
    MFU = (training FLOPs per sample x samples per second) / (devices x peak FLOP/s per device)
where training FLOPs per sample come from the task (for the Transformer: model.flops_per_token(),
forward + backward, times tokens per sample) and the peak is `logger.peak_tflops` (dense bf16 of
the device, 989 TFLOP/s for an H100 SXM). Recomputation from activation checkpointing is not
counted: MFU measures useful model work, not hardware FLOPs.
"""
from __future__ import annotations

import resource

import torch

from megadalle.train.callbacks import Callback


class Speed(Callback):
    def __init__(self, samples_per_step: int, tokens_per_sample: int | None, flops_per_sample: float | None,
                 peak_tflops: float, devices: int):
        self.samples_per_step = samples_per_step
        self.tokens_per_sample = tokens_per_sample
        self.flops_per_sample = flops_per_sample
        self.peak = peak_tflops * 1e12 * devices

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """Rates from the loop's `step_seconds` (the update alone: checkpoint saves are not counted)."""
        samples_per_s = self.samples_per_step / metrics["step_seconds"]
        metrics["samples_per_s"] = samples_per_s
        if self.tokens_per_sample:
            metrics["tokens_per_s"] = samples_per_s * self.tokens_per_sample
        if self.flops_per_sample:
            metrics["mfu"] = self.flops_per_sample * samples_per_s / self.peak
        metrics.update(memory())


def memory() -> dict[str, float]:
    """Peak device memory (GiB) on CUDA, else the process's peak resident set size (GiB)."""
    if torch.cuda.is_available():
        return {"mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                "mem_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    return {"mem_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
