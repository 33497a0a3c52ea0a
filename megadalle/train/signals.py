"""SIGUSR1 / SIGTERM ask for a checkpoint and a clean stop instead of killing the run.

Slurm sends USR1 ahead of the time limit (`--signal=B:USR1@120`, forwarded to the tasks by the
batch script) and TERM on preemption. The handler only sets a flag; the loop checks it between
updates on all ranks together (one rank may get the signal before the others).
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def install(self) -> "StopFlag":
        """Take over the stop signals (only possible from the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.received = signum

    @property
    def set(self) -> bool:
        return self.received is not None
