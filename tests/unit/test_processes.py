"""`owner_gone` decides whether a leftover temporary's writer is dead, and so whether the temporary (as large as the
model) may be removed: a writer on another node of shared storage cannot be seen from here, so its tag must never
be judged by a local pid, whatever that pid is here."""
import os
import socket
import subprocess
import sys

import psutil

from megadalle.processes import owner_gone, owner_tag


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_local_writer_is_gone_and_a_live_one_is_not():
    assert owner_gone(f"{socket.gethostname()}-{_dead_pid()}")
    assert not owner_gone(owner_tag())


def test_another_hosts_writer_is_never_taken_for_a_local_process():
    other = socket.gethostname() + "-elsewhere"
    assert not owner_gone(f"{other}-{_dead_pid()}")  # that pid runs nothing here, yet the writer may live there
    assert not owner_gone(f"{other}-{os.getpid()}")


def start_of_this_process() -> str:
    """The start in the tag, read back as psutil reads a process's creation time (ticks since boot, plus the boot)."""
    start = owner_tag().rpartition(".")[2]
    seconds = psutil.boot_time() + int(start) / os.sysconf("SC_CLK_TCK")
    assert abs(seconds - psutil.Process().create_time()) < 0.05
    return start


def test_a_tag_names_the_writer_s_start_and_the_same_pid_started_later_is_another_writer():
    """A container restarted under the same host name runs its command under the same pid (often 1): the temporary
    its killed predecessor left named a live process, this one, and was kept for good."""
    start = start_of_this_process()
    here = f"{socket.gethostname()}-{os.getpid()}"
    assert owner_tag() == f"{here}.{start}"
    assert not owner_gone(f"{here}.{start}")
    assert owner_gone(f"{here}.{int(start) - 1}")  # the predecessor: this pid, an earlier start
    assert not owner_gone(here)  # named before the tags held the start: its pid runs, so it may be a live writer
    assert not owner_gone(f"{socket.gethostname()}-elsewhere-{os.getpid()}.{int(start) - 1}")
