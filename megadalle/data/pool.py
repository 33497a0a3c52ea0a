"""The worker pool of prepare and shard indexing, safe to stop from a terminal, a scheduler or a test.

Ctrl-C reaches every process of the terminal's group: the workers ignore it and the main process stops them (one
line from the command, not one traceback per worker). Leaving the pool terminates it with SIGTERM, which the
workers take with its default action even when the caller ignores it (`nohup`-like wrappers, a parent that
stopped a run): otherwise the exit waited forever for workers that were already idle.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.pool import Pool


def _worker_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(processes: int) -> Pool:
    """A `multiprocessing` pool (use it as a context manager: leaving it terminates the workers)."""
    return mp.get_context().Pool(processes, _worker_signals)
