"""glibc's allocator set to keep freed memory for reuse, for training on the CPU.

By default glibc serves each allocation above its mmap threshold (128 KiB at first, raised as large blocks
are freed, up to 32 MiB) with a fresh mmap, and returns heap memory to the kernel whenever more than its
trim threshold lies free at the top. A CPU training step frees and reallocates the same activation and
gradient buffers every update, so each update faults them in again and the kernel zeroes every page: about
5,000 page faults per update of the demo's dVAE (batch 8, buffers of 0.1-2 MiB), which made an update 1.3x
slower (benchmarks/RESULTS.md, Demo: "The allocator"). Fixing both thresholds (the mmap one at its 32 MiB
maximum, the trim one at 1 GiB) keeps the freed buffers in the heap, where the next update finds them: a
few page faults per update. The cost is that the process keeps its peak heap (below 1 GiB free) instead of
returning it. GPU memory is not glibc's, so GPU runs are left alone.

Environment settings win: a run with any MALLOC_*_ variable set (benchmarks/scale_rehearsal.py sets one to
measure what ranks hold) or another allocator preloaded (jemalloc, tcmalloc) keeps what it chose.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's parameter numbers (malloc.h)."""
MMAP_THRESHOLD = 32 << 20
"""glibc's largest allowed mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)."""
TRIM_THRESHOLD = 1 << 30
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_memory() -> str | None:
    """Set glibc's thresholds as the module docstring says; None when set, else why not (one phrase)."""
    chosen = [name for name in ENVIRONMENT if name in os.environ]
    if chosen:
        return f"{chosen[0]} is set in the environment"
    preload = os.environ.get("LD_PRELOAD", "")
    other = next((name for name in PRELOADED if name in preload), None)
    if other:
        return f"{other} is preloaded"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "this C library has no mallopt (not glibc)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "mallopt refused the thresholds"
    return None
