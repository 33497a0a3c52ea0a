"""`owner_gone` decides whether a leftover temporary's writer is dead, and so whether the temporary (as large as the
model) may be removed: a writer on another node of shared storage cannot be seen from here, so its tag must never
be judged by a local pid, whatever that pid is here."""
import os
import socket
import subprocess
import sys

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
