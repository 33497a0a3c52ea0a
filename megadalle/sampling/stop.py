"""A scheduler's stop signal ends a sampling verb (`generate`, `evaluate`) as Ctrl-C does: at once, in Python.

Slurm's scancel, preemption and time limit, `timeout` and `docker stop` all send TERM. Its default action killed the
process where it stood (exit 143, nothing printed), so the output folder a run had made stayed behind empty and the
samples it had drawn were lost. Here TERM (and USR1, Slurm's `--signal` warning) raises `SamplingStopped` wherever
the run is, like the KeyboardInterrupt of Ctrl-C: the verb's clean-up runs (megadalle.outputs), and it ends with one
line and STOPPED_EXIT (75: "rerun the same command", the status launch/slurm/train.sbatch requeues on and a `-m`
sweep stops on; TERM's own 143 is neither). Unlike a training run (megadalle.train.signals), a sampling run has no
update to finish first: what it keeps is what it saved already (generate saves each finished batch:
megadalle.sampling.resume). Ctrl-C raises through the same handler (as an `Interrupted`, a KeyboardInterrupt), so
that one landing where Python ignores exceptions (a `__del__`, fork's clean-up) is not lost, as Python's own
KeyboardInterrupt is there.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from megadalle.errors import StoppedBySignal
from megadalle.interrupted import Interrupted, how
from megadalle.train.signals import STOP_SIGNALS, handled_by, raising_at_once


class SamplingStopped(StoppedBySignal):
    """A stop signal ended a sampling run; the verb says what it kept (the CLI prints this line if it does not)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(how(self))


def stop_raised(signum: int) -> BaseException:
    """What a stop signal raises in a sampling run: Ctrl-C a KeyboardInterrupt, as Python's own handler would (the
    verb's line then says "interrupted", 130), a scheduler's signal SamplingStopped."""
    return Interrupted(signum) if signum == signal.SIGINT else SamplingStopped(signum)


def stops_on_signals():
    """Within the block a stop signal raises `stop_raised`'s error, one the command held since its start
    (signals.taken_at_start, around a sweep's job) at once."""
    return raising_at_once(STOP_SIGNALS, stop_raised)


@contextmanager
def stops_after() -> Iterator[None]:
    """Within the block a stop signal (Ctrl-C's too) waits, and is raised again once it ends, to the handler it
    would have met: a step whose parts must agree when the verb says what it kept. A TERM between a saved batch's
    file and its count said 5 samples were saved where the file held 10. The handlers are swapped, not the signal
    mask: a mask is one thread's, and the process's signal may land on another (torch's, tqdm's), whose Python
    handler still runs in the main thread. Outside the main thread (where no handler can be set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    waiting: list[int] = []
    with handled_by(STOP_SIGNALS, lambda signum, frame: waiting.append(signum)):
        yield
    if waiting:
        signal.raise_signal(waiting[0])
