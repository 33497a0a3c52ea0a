"""A stop raised where Python ignores exceptions (a `__del__`, fork's clean-up) is not lost: the signal comes again
and stops the run in its own code. It was printed as "Exception ignored" and the run went on as if never stopped:
the tokenizer's test once signalled while its parent ran logging's at-fork lock release, and waited out its child."""
import os
import signal
import sys
import time

import pytest

from megadalle.interrupted import Interrupted, stops_at_once
from megadalle.sampling.stop import SamplingStopped, stops_on_signals
from megadalle.train.signals import raising, raising_at_once, taken_at_start


class SignalledWhileCollected:
    def __init__(self, sig: int):
        self.sig = sig

    def __del__(self):
        os.kill(os.getpid(), self.sig)
        for _ in range(1000):  # the handler runs here, in code whose exceptions Python ignores
            pass


def stopped_while_collecting(stops, sig: str) -> None:
    """Signals `sig` from a destructor inside `stops`, then waits 10 s for the stop (the caller expects it)."""
    with stops():
        SignalledWhileCollected(getattr(signal, sig))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_stop_raised_in_a_destructor_stops_a_data_verb_all_the_same(capsys, sig):
    with pytest.raises(Interrupted, match=sig):
        stopped_while_collecting(stops_at_once, sig)
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("sig, stop", [("SIGTERM", SamplingStopped), ("SIGUSR1", SamplingStopped),
                                       ("SIGINT", KeyboardInterrupt)])
def test_a_stop_raised_in_a_destructor_stops_a_sampling_verb_all_the_same(capsys, sig, stop):
    """Ctrl-C too: generate's and evaluate's was Python's own KeyboardInterrupt, lost in a destructor."""
    with pytest.raises(stop, match=sig):
        stopped_while_collecting(stops_on_signals, sig)
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_ctrl_c_in_a_destructor_interrupts_a_training_verbs_start_up_all_the_same(capsys):
    """The demo's Ctrl-C landed in importlib's module-lock weakref callback while it imported (CI), was printed as
    "Exception ignored", and the demo ran to its end (exit 0)."""
    with pytest.raises(KeyboardInterrupt):
        stopped_while_collecting(taken_at_start, "SIGINT")
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_stop_landing_while_the_handlers_are_swapped_gives_back_those_swapped(monkeypatch):
    """A signal between two swaps raised before the block's clean-up began: the handler swapped first stayed, raising
    for good (a scheduler's USR1 and a user's Ctrl-C together)."""
    watched = (signal.SIGUSR1, signal.SIGINT)
    before, hook, real = {sig: signal.getsignal(sig) for sig in watched}, sys.unraisablehook, signal.signal

    def swap_then_signal(sig, handler):
        previous = real(sig, handler)
        if sig == signal.SIGUSR1 and handler is not before[sig]:
            os.kill(os.getpid(), signal.SIGUSR1)  # lands before SIGINT's swap
        return previous

    monkeypatch.setattr(signal, "signal", swap_then_signal)
    with pytest.raises(Interrupted, match="SIGUSR1"):
        with raising(watched, Interrupted):
            pass
    monkeypatch.undo()
    assert {sig: signal.getsignal(sig) for sig in watched} == before and sys.unraisablehook is hook


def test_a_stop_lost_as_the_block_ends_is_raised_at_its_end_not_at_the_handler_after_it():
    """The raise lost in a destructor and the block over before the signal came again (10 ms later): it met the
    handler from before the block, TERM's default killing the process."""
    after = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: after.append(signum))
    try:
        with pytest.raises(Interrupted, match="SIGUSR1"):
            with raising((signal.SIGUSR1,), Interrupted):
                SignalledWhileCollected(signal.SIGUSR1)
    finally:
        time.sleep(0.2)  # past the resend's 10 ms, before the recorder goes
        signal.signal(signal.SIGUSR1, previous)
    assert after == []


def test_other_ignored_exceptions_go_where_they_went_and_the_hook_is_given_back():
    before, seen = sys.unraisablehook, []
    sys.unraisablehook = seen.append
    try:
        with raising_at_once((signal.SIGTERM,), Interrupted):
            class Failing:
                def __del__(self):
                    raise ValueError("not a stop")

            Failing()
        assert sys.unraisablehook == seen.append
    finally:
        sys.unraisablehook = before
    assert [type(u.exc_value) for u in seen] == [ValueError]
