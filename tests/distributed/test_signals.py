"""SIGUSR1 and SIGTERM set the stop flag (the loop then checkpoints and stops) instead of killing."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megadalle.train import signals
from megadalle.train.loop import Result
from megadalle.train.signals import (LATE_COPIES, STOP_SIGNALS, STOPPED_EXIT, LateCopies, StopFlag, exit_status,
                                      forget_late_copies, ignore_late_copies)
from tests.launch_signals import stop_after_two_steps

import dist_launch as launch


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


@pytest.fixture
def stopped(request, monkeypatch):
    """A StopFlag given back after a stop, its signal's handler put back as it was after the test."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    monkeypatch.setattr(signals, "_stopped_here", False)
    StopFlag().install().uninstall(stopped=True)
    yield request.param
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("stopped", [signal.SIGUSR1, signal.SIGTERM], indirect=True)
def test_after_a_stop_a_late_copy_of_the_signal_is_ignored(stopped):
    """The ranks stop together when any one is signalled: a rank's own copy that arrives after its checkpoint
    (another node's forwarder was slower) killed it on its way out."""
    os.kill(os.getpid(), stopped)  # would end this process with the default action
    assert isinstance(signal.getsignal(stopped), LateCopies)


@pytest.mark.parametrize("stopped", [signal.SIGUSR1, signal.SIGTERM], indirect=True)
@pytest.mark.parametrize("ends", ["window", "train"])
def test_after_the_late_window_or_the_run_the_signal_does_what_it_did_before(stopped, ends):
    received = []

    def before(signum, frame):
        received.append(signum)

    signal.signal(stopped, before)
    StopFlag().install().uninstall(stopped=True)
    if ends == "window":
        signal.getsignal(stopped).until = 0.0
    else:
        forget_late_copies()  # as train() returns
        assert signal.getsignal(stopped) is before
    os.kill(os.getpid(), stopped)
    assert received == [stopped] and signal.getsignal(stopped) is before


@pytest.mark.parametrize("stopped", [signal.SIGTERM], indirect=True)
@pytest.mark.parametrize("start", ["fork", "exec"])
def test_after_a_stopped_run_the_processes_it_starts_still_die_of_sigterm(stopped, start):
    """It was left ignored, and everything the process started inherited that: `multiprocessing.Pool`'s
    terminate (prepare's exit) waited forever, and a bash script (launch/train.sh) could not trap TERM. An exec'd
    child gets the default action even within the late window; `train` forgets the late copies as it returns."""
    if start == "fork":
        forget_late_copies()
        child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        child.terminate()
        child.join(20)
        code = child.exitcode
    else:
        proc = subprocess.Popen(["sleep", "60"])
        proc.terminate()
        code = proc.wait(20)
    assert code == -signal.SIGTERM


def test_the_exit_of_a_process_whose_run_stopped_ignores_late_copies(monkeypatch):
    """At the exit barrier a rank still gets its own late copy (the other node's forwarder): it killed it."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        monkeypatch.setattr(signals, "_stopped_here", False)
        ignore_late_copies()
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # no stop in this process: untouched
        monkeypatch.setattr(signals, "_stopped_here", True)
        ignore_late_copies()
        assert [signal.getsignal(sig) for sig in LATE_COPIES] == [signal.SIG_IGN] * len(LATE_COPIES)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("stopped, step, code", [(True, 5, STOPPED_EXIT), (True, 10, 0), (False, 10, 0)],
                         ids=["stopped", "stopped-at-the-last-update", "finished"])
def test_a_run_stopped_with_updates_left_exits_75(stopped, step, code):
    """A stopped run exited 0 and looked finished: Slurm never requeued a preempted job (launch/slurm/train.sbatch
    requeues on 75). One a signal reached during its last update has nothing left to do: 0."""
    assert exit_status(stopped, step, 10) == code


@pytest.mark.parametrize("module", ["dvae", "clip"])
def test_train_dvae_and_train_clip_return_the_stop_status(module, monkeypatch):
    """They share the loop and the requeue with `train`."""
    import importlib

    from omegaconf import OmegaConf

    verb = importlib.import_module(f"megadalle.train.{module}")
    monkeypatch.setattr(verb, "fit_and_export", lambda cfg: (Result(Path("run"), 3, True, [1.0]), None))
    assert verb.run(OmegaConf.create({"trainer": {"steps": 100}})) == STOPPED_EXIT


@pytest.mark.parametrize("rank, line", [(0, "[train] stopped by signal at step 3; run directory run"), (1, "")])
def test_a_stopped_run_reports_how_it_stopped_on_rank_0(capsys, rank, line):
    Result(Path("run"), 3, True, [1.0], rank).report("train")
    assert capsys.readouterr().out.strip() == line


@pytest.mark.distributed
def test_a_sigterm_to_the_process_group_reaches_loader_workers_and_still_checkpoints(train_overrides, tmp_path):
    """torchrun, Slurm and `timeout` send SIGTERM to every process of the group, the loader's workers included:
    torch's worker handler died of it, the loader raised mid-update and the run exited without a checkpoint."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "megadalle", "train", *train_overrides, "data.num_workers=2", "trainer.steps=100000",
           "trainer.checkpoint_every=0", f"run_dir={run_dir}"]
    out = stop_after_two_steps(cmd, launch.base_env(), launch.ROOT, run_dir, signal.SIGTERM, group=True)
    assert "stopped by signal" in out and "killed by signal" not in out, out[-3000:]


EXIT_WITH_A_LIVE_LOADER = """
import sys
import torch
from torch.utils.data import DataLoader, IterableDataset
from megadalle.data.loader import ignore_stop_signals

class Count(IterableDataset):
    def __iter__(self):
        yield from map(torch.tensor, range(10**9))

class Holder:
    pass

holder = Holder()
holder.self = holder  # a cycle keeps the loader's iterator alive until the interpreter exits
holder.batches = iter(DataLoader(Count(), batch_size=None, num_workers=1, worker_init_fn=ignore_stop_signals))
next(holder.batches)
sys.exit(1)
"""


def test_workers_still_end_when_multiprocessing_stops_them_at_exit():
    """At the interpreter's exit multiprocessing SIGTERMs the workers still running and waits for them: workers
    that ignored every SIGTERM hung that exit."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", EXIT_WITH_A_LIVE_LOADER], env=launch.base_env(), timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]
