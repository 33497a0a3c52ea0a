"""Throughput, MFU and memory, added to every update's metrics.

MFU (model FLOPs utilisation, PaLM appendix B):
    MFU = (training FLOPs per sample x samples per second) / (devices x peak FLOP/s per device)
where training FLOPs per sample come from the task (for the Transformer: model.flops_per_token(),
forward + backward, times tokens per sample) and the peak is `logger.peak_tflops` (dense bf16 of
the device, 989 TFLOP/s for an H100 SXM). Recomputation from activation checkpointing is not
counted: MFU measures useful model work, not hardware FLOPs.

Memory (`mem_gib`) is the largest of the ranks' peaks since the run began (one all-reduce at each update, none in a
single process: rank 0 alone hid a pipeline's heavier stage), its engine's build included (the trainer resets it first,
`reset_peak_memory`: a sweep's jobs, or the demo's stages, run one after another in one process, and each reported
the largest peak of those before it; a callback's start must not reset it, since one after it reads the build's):
on CUDA the peak PyTorch allocated (`mem_reserved_gib`: its caching allocator's peak), elsewhere the peak resident
set size, VmHWM on Linux after a reset through /proc/self/clear_refs. Where /proc does not take that reset it is
the process's peak since it started (VmHWM, or ru_maxrss without /proc).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import sys
from pathlib import Path

import torch

from megadalle.train import distributed
from megadalle.train.callbacks import Callback

PROC = Path("/proc/self")


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
        metrics.update(largest_over_ranks(memory()))


def largest_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value's maximum over the ranks, on every rank: the memory to plan for is that of the rank that needs most.
    Every rank reports the same names (`memory()`), so one all-reduce carries them all."""
    return dict(zip(values, distributed.largest(list(values.values()))))


def reset_peak_memory() -> None:
    """Start `memory()`'s peak afresh: CUDA's counters, and on Linux the resident set's high-water mark ("5" to
    clear_refs sets VmHWM to the current size), once the heap an earlier run freed is given back (glibc keeps it:
    cpu_malloc.py); without /proc, ru_maxrss goes on from the process's start."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    with contextlib.suppress(OSError):
        (PROC / "clear_refs").write_text("5")


def memory() -> dict[str, float]:
    """Peak device memory (GiB) on CUDA, else the peak resident set size (GiB), since `reset_peak_memory`."""
    if torch.cuda.is_available():
        return {"mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                "mem_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    return {"mem_gib": resident_peak_kib() / 2**20}


def resident_peak_kib() -> int:
    """VmHWM of /proc/self/status (reset by `reset_peak_memory`), else ru_maxrss (never reset), which Linux gives in
    KiB and macOS, without /proc, in bytes."""
    try:
        found = re.search(r"^VmHWM:\s*(\d+) kB", (PROC / "status").read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak
