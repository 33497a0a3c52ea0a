"""SIGUSR1 and SIGTERM set the stop flag (the loop then checkpoints and stops) instead of killing."""
import os
import signal

import pytest

from megadalle.train.signals import StopFlag


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_sets_flag_and_handlers_are_restored(sig):
    before = signal.getsignal(sig)
    flag = StopFlag().install()
    try:
        assert not flag.set
        os.kill(os.getpid(), sig)
        assert flag.set and flag.received == sig
    finally:
        flag.uninstall()
    assert signal.getsignal(sig) == before
