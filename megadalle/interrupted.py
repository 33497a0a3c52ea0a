"""A stop signal raised where it lands, as Ctrl-C raises KeyboardInterrupt: the stop of a command with no update to
finish first.

The data verbs (prepare, index, tokenizer, encode, import-dvae, export, plan) took TERM with its default action:
Slurm's scancel, preemption and time limit, `timeout` and `docker stop` ended them where they stood with 143 and
nothing said, and prepare's writers left their temporaries for the next run to sweep. Now TERM and USR1 (Slurm's
warning) raise `Interrupted` there (`stops_at_once`, which the CLI holds around such a verb): what cleans up after
Ctrl-C cleans up after them (prepare aborts its writers; every output is published whole, last), and the verb ends
with one line and STOPPED_EXIT (`stop_status`), as the sampling verbs end on them (sampling/stop.py). The demo
raises it for Ctrl-C too, around its training stages (demo_stop.py), and so does the CLI around a data verb: a
raise is then not lost where Python ignores exceptions (raising_at_once), as Python's own KeyboardInterrupt is.

`Interrupted` is a KeyboardInterrupt, not an Exception, so that no `except Exception` takes it for a failure of
its own: prepare counts an image that raised as a bad file and goes on.
"""
from __future__ import annotations

import signal

from megadalle.train.signals import STOP_SIGNALS, STOPPED_EXIT, raising_at_once


class Interrupted(KeyboardInterrupt):
    """A stop signal raised outside a training loop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(interrupted: BaseException) -> int:
    """The signal behind `interrupted`: its own (an `Interrupted`'s, a sampling verb's SamplingStopped's), else
    Ctrl-C's (Python's own KeyboardInterrupt)."""
    return getattr(interrupted, "signum", signal.SIGINT)


def named(interrupted: BaseException) -> str:
    """The signal behind `interrupted` as a stop line names it."""
    return name_of(signum_of(interrupted))


def name_of(signum: int) -> str:
    """A stop signal as a stop line names it: Ctrl-C for SIGINT, else its name (SIGTERM, SIGUSR1)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def by_ctrl_c(interrupted: BaseException) -> bool:
    return signum_of(interrupted) == signal.SIGINT


def how(interrupted: BaseException) -> str:
    """What a verb's stop line says ended it: "interrupted" for Ctrl-C, "stopped by SIGTERM" for a signal."""
    return "interrupted" if by_ctrl_c(interrupted) else f"stopped by {named(interrupted)}"


def stop_status(interrupted: BaseException) -> int:
    """A verb's exit status when `interrupted` ended it: 130 for Ctrl-C (128 + SIGINT, what a shell reports for
    it); STOPPED_EXIT for a scheduler's signal, which its scripts and a `-m` sweep take for "rerun the same command"
    (sampling/stop.py says why not TERM's own 143)."""
    return 130 if by_ctrl_c(interrupted) else STOPPED_EXIT


def stops_at_once():
    """Within the block TERM, USR1 and Ctrl-C raise `Interrupted` wherever the process is (Ctrl-C's is the
    KeyboardInterrupt Python's own handler raises, but not lost where Python ignores exceptions: raising_at_once)."""
    return raising_at_once(STOP_SIGNALS, Interrupted)
