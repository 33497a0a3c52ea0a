"""SIGUSR1 / SIGTERM / SIGINT ask for a checkpoint and a clean stop instead of killing the run.

Slurm sends USR1 ahead of the time limit (`--signal=B:USR1@120`, forwarded to the tasks by the
batch script) and TERM on preemption; Ctrl-C sends INT. The handler only sets a flag; the loop
checks it between updates on all ranks together (one rank may get the signal before the others),
saves a checkpoint and returns, so rerunning the same command resumes. A second Ctrl-C while the
run finishes its update and saves is the user insisting: it raises KeyboardInterrupt as usual.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class StopFlag:
    def __init__(self):
        self.received: int | None = None
        self._previous = {}
        self._pid = os.getpid()

    def install(self) -> "StopFlag":
        """Take over the stop signals (only possible from the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self, stopped: bool = False) -> None:
        """Give the stop signals back. After a run that `stopped` for a signal (on any rank), TERM and USR1 are
        ignored instead: the ranks stop together when one is signalled, so another rank's copy can arrive late
        (a second node's forwarder, a scheduler signalling each process), after the checkpoint, and it killed
        the process on its way out (exit -15, and the launcher then reported a failure)."""
        for sig, handler in self._previous.items():
            late = stopped and sig in (signal.SIGTERM, signal.SIGUSR1)
            signal.signal(sig, signal.SIG_IGN if late else handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: Ctrl-C reaches the whole process group, the trainer decides
        if signum == signal.SIGINT:
            if self.received == signal.SIGINT:
                raise KeyboardInterrupt
            print("[train] Ctrl-C: saving a checkpoint after this update, then stopping (Ctrl-C again to abort "
                  "without saving)", file=sys.stderr, flush=True)
        self.received = signum

    @property
    def set(self) -> bool:
        return self.received is not None
