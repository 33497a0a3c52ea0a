"""`stoppable_call.call` runs a long C call in a child: its result and errors come back, a child that dies is an
error naming its signal, and a Ctrl-C in this process is raised at once, however long the child's call runs."""
import os
import pickle
import signal
import time

import pytest

from megadalle import stoppable_call
from megadalle.stoppable_call import ChildDied, call
from tests.long_c_call import in_c_for, signal_once_started


def add(a, b):
    return a + b


def refuse(value):
    raise ValueError(f"bad value {value}")


class Unpicklable(Exception):
    def __reduce__(self):
        raise pickle.PicklingError("not this one")


def raise_unpicklable():
    raise Unpicklable("kept by its message")


def killed():
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_result_and_the_error_come_back_from_the_child():
    assert call(add, 2, 3) == 5
    assert call(os.getpid) != os.getpid()
    with pytest.raises(ValueError, match="^bad value 7$"):
        call(refuse, 7)
    with pytest.raises(RuntimeError, match="^Unpicklable: kept by its message$"):
        call(raise_unpicklable)


def test_a_child_that_dies_is_an_error_naming_its_signal():
    """An out-of-memory kill: the result never comes; waiting for it hung."""
    with pytest.raises(ChildDied, match="^SIGKILL$"):
        call(killed)
    assert stoppable_call.exit_status(3) == "exit status 3"


def children() -> set[str]:
    """The pids of this process's children, zombies (ended, not reaped) included."""
    mine = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:  # ended meanwhile
            continue
        if stat.rpartition(")")[2].split()[1] == str(os.getpid()):
            mine.add(pid)
    return mine


def test_ctrl_c_during_the_childs_long_c_call_is_raised_at_once_and_the_child_is_killed(tmp_path):
    started = str(tmp_path / "started")
    before = children()
    signal_once_started(started, signal.SIGINT)
    begun = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        call(in_c_for, 60.0, started)
    assert time.monotonic() - begun < 30  # not the call's 60 s
    assert os.path.exists(started)
    assert children() - before == set()  # the child is gone, reaped


def test_a_stop_while_the_child_starts_kills_it_too(tmp_path, monkeypatch):
    import multiprocessing.process

    start = multiprocessing.process.BaseProcess.start

    def started_then_stopped(self):
        start(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", started_then_stopped)
    before = children()
    with pytest.raises(KeyboardInterrupt):
        call(in_c_for, 60.0, str(tmp_path / "started"))
    assert children() - before == set()
