"""A scheduler's stop signal ends a sampling verb (`generate`, `evaluate`) as Ctrl-C does: at once, in Python.

Slurm's scancel, preemption and time limit, `timeout` and `docker stop` all send TERM. Its default action killed
the process where it stood (exit 143, nothing printed), so the output folder a run had made stayed behind empty
and the samples it had drawn were lost. Here TERM (and USR1, Slurm's `--signal` warning) raises `SamplingStopped`
wherever the run is, like the KeyboardInterrupt of Ctrl-C: the verb's clean-up runs (megadalle.outputs), and it
ends with one line and STOPPED_EXIT (75: "rerun the same command", the status launch/slurm/train.sbatch requeues
on and a `-m` sweep stops on; TERM's own 143 is neither). Unlike a training run (megadalle.train.signals), a sampling run has no update to finish first: what it
keeps is what it saved already (generate saves each finished batch: megadalle.sampling.resume).
"""
from __future__ import annotations

import signal

from megadalle.errors import StoppedBySignal
from megadalle.train.signals import LATE_COPIES, raising_at_once

STOP_SIGNALS = LATE_COPIES
"""USR1 and TERM: the scheduler's. INT stays Python's KeyboardInterrupt."""


class SamplingStopped(StoppedBySignal):
    """A stop signal ended a sampling run; the verb says what it kept (the CLI prints this line if it does not)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def stops_on_signals():
    """Within the block a stop signal raises SamplingStopped, one the command held since its start
    (signals.taken_at_start, around a sweep's job) at once."""
    return raising_at_once(STOP_SIGNALS, SamplingStopped)
