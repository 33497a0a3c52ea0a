"""A stand-in for a long call into C (sentencepiece's training), and the signal a user sends while it runs: the tests
of stoppable_call.py and of the tokenizer's stop share them."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


def in_c_for(seconds: float, started: str | Path) -> None:
    """What such a call is to Python: no signal handler of its process runs until it returns. Touches `started`
    first."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})
    Path(started).touch()
    time.sleep(seconds)


def signal_once_started(started: str | Path, sig: int) -> None:
    """Send this process `sig`, from another thread, once `started` exists; not at all if it does not within 30 s
    (the test has failed by then, and the signal would land in another test: a TERM ended the whole session)."""

    def send():
        deadline = time.monotonic() + 30
        while not Path(started).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if Path(started).exists():
            time.sleep(0.3)  # past fork's clean-up, into the wait (a signal in the clean-up: test_stop_raise_lost.py)
            os.kill(os.getpid(), sig)

    threading.Thread(target=send, daemon=True).start()
