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
from megadalle.train.result import Result
from megadalle.train.signals import (LATE_COPIES, STOP_SIGNALS, STOPPED_EXIT, LateCopies, StopFlag, exit_status,
                                      forget_late_copies, ignore_late_copies, raising_at_once, run_flag,
                                      taken_at_start)
from tests.launch_signals import signal_once_taken, stop_after_two_steps

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


@pytest.mark.parametrize("first, aborts", [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGUSR1, False)],
                         ids=["ctrl-c", "term", "usr1"])
def test_a_ctrl_c_after_a_ctrl_c_or_a_term_aborts(first, aborts, capsys):
    """launch/train.sh passes the first Ctrl-C on as TERM: the user's second, an INT after that TERM, aborts, as a
    second Ctrl-C does without the script; after a scheduler's USR1 a Ctrl-C still lets the checkpoint be saved."""
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), first)
        if aborts:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)
            assert flag.received == signal.SIGINT and "Ctrl-C again to abort" in capsys.readouterr().err
    finally:
        flag.uninstall()


def test_a_ctrl_c_after_a_term_aborts_whatever_came_between(capsys):
    """train.sh's first Ctrl-C goes on as TERM; a scheduler's USR1 after it must not turn the user's second Ctrl-C
    back into a request to save."""
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()


def test_the_latest_runs_stop_signal_is_kept_for_the_demos_stop_line():
    """A training stage's flag keeps its signal to itself: the demo names it from signals.last_stop."""
    flag = run_flag()
    try:
        assert signals.last_stop() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.last_stop() == signal.SIGUSR1
    finally:
        flag.uninstall()
    run_flag().uninstall()  # the next run's flag starts afresh
    assert signals.last_stop() is None


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


def test_after_a_stop_the_first_ctrl_c_is_ignored_and_a_second_interrupts(monkeypatch):
    """A scheduler's USR1 and TERM then a user's Ctrl-C, all within 40 ms: the Ctrl-C came after the checkpoint and
    turned its exit 75 into "interrupted" (130), or a KeyboardInterrupt traceback from an exit handler."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        monkeypatch.setattr(signals, "_stopped_here", False)
        StopFlag().install().uninstall(stopped=True)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("the first Ctrl-C after a stop interrupted")
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_within_a_command_the_late_copies_are_ignored_until_it_ends(monkeypatch):
    """`train` returns with the handlers it found (forget_late_copies), but a training verb's command still says how
    its run ended and returns before its exit ignores the late copies: a TERM or Ctrl-C there ended it (-15, 130)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    monkeypatch.setattr(signals, "_stopped_here", False)
    with taken_at_start():
        run_flag().install((signal.SIGINT,)).uninstall(stopped=True)
        forget_late_copies()  # as train() returns
        assert all(isinstance(signal.getsignal(sig), LateCopies) for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


@pytest.mark.distributed
def test_a_ctrl_c_right_after_a_stops_checkpoint_leaves_its_exit_75(tmp_path):
    proc = subprocess.Popen([*start_up_command(tmp_path / "run", "trainer.steps=100000"), "trainer.checkpoint_every=0"],
                            env=launch.base_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []

    def read_until(text: str) -> None:
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if text in line:
                return
        raise AssertionError("".join(lines)[-3000:])

    try:
        read_until("step ")
        proc.send_signal(signal.SIGUSR1)
        read_until("[train] stopped by signal at step")  # the verb's last line, once its run returned
        proc.send_signal(signal.SIGINT)
        code, out = proc.wait(timeout=120), "".join(lines) + proc.stdout.read()
    finally:
        proc.kill()
        proc.stdout.close()
    assert code == STOPPED_EXIT and "Traceback" not in out and "interrupted" not in out, out[-3000:]


def test_the_exit_of_a_process_whose_run_stopped_ignores_late_copies(monkeypatch):
    """At the exit barrier a rank still gets its own late copy (the other node's forwarder): it killed it."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        monkeypatch.setattr(signals, "_stopped_here", False)
        ignore_late_copies()
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # no stop in this process: untouched
        monkeypatch.setattr(signals, "_stopped_here", True)
        ignore_late_copies()
        assert [signal.getsignal(sig) for sig in STOP_SIGNALS] == [signal.SIG_IGN] * len(STOP_SIGNALS)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_stopped_commands_late_copies_stay_ignored_to_its_exit_with_no_handler_set_between(monkeypatch):
    """The command's end gave Ctrl-C back to Python and TERM to its default before its exit ignored them: a Ctrl-C
    landing between made a checkpointed stop "interrupted" (130), a TERM killed the process (-15). With `to_exit`
    nothing is set after the run but SIG_IGN; without it (a command run in-process), the handlers come back."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    real, set_at_the_end = signal.signal, []
    try:
        for to_exit, then in ((True, [signal.SIG_IGN] * 3), (False, [before[sig] for sig in STOP_SIGNALS])):
            for sig, handler in before.items():
                real(sig, handler)
            monkeypatch.setattr(signals, "_stopped_here", False)
            with taken_at_start(to_exit=to_exit):
                run_flag().install((signal.SIGINT,)).uninstall(stopped=True)
                forget_late_copies()  # as train() returns
                set_at_the_end.clear()
                monkeypatch.setattr(signal, "signal", lambda sig, handler: set_at_the_end.append(handler) or
                                    real(sig, handler))
            monkeypatch.setattr(signal, "signal", real)
            assert [signal.getsignal(sig) for sig in STOP_SIGNALS] == then
            if to_exit:
                assert set(set_at_the_end) == {signal.SIG_IGN}, set_at_the_end
    finally:
        for sig, handler in before.items():
            real(sig, handler)


@pytest.mark.parametrize("stopped, step, code", [(True, 5, STOPPED_EXIT), (True, 10, 0), (False, 10, 0),
                                                 (True, None, STOPPED_EXIT)],
                         ids=["stopped", "stopped-at-the-last-update", "finished", "stopped-before-loading"])
def test_a_run_stopped_with_updates_left_exits_75(stopped, step, code):
    """A stopped run exited 0 and looked finished: Slurm never requeued a preempted job (launch/slurm/train.sbatch
    requeues on 75). One a signal reached during its last update has nothing left to do: 0. One stopped before it
    read its checkpoint does not know its step: 75, and the next attempt finds out."""
    assert exit_status(stopped, step, 10) == code


def test_a_signal_before_the_run_is_kept_for_it_and_the_handlers_come_back():
    """A training verb takes USR1 and TERM at its start: a preemption during the start-up killed it (143, never
    requeued). The run takes the flag over with what it received; Ctrl-C still interrupts the start-up at once."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with taken_at_start():
        with taken_at_start():  # a sweep job's, inside the command's: the same flag
            os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        flag = run_flag()
        assert flag.received == signal.SIGUSR1
        flag.uninstall()
        second = run_flag()  # taken once: a second run in the process starts clean
        second.uninstall()
        assert second is not flag and not second.set
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


def test_the_handlers_taken_at_start_come_back_when_the_command_fails_before_its_run():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), taken_at_start():
        raise RuntimeError("a bad config")
    assert signal.getsignal(signal.SIGTERM) == before and signals._at_start is None


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_child_started_while_the_signals_are_held_still_dies_of_sigterm(start):
    """A forked child inherits the trainer's handler: it ignored TERM, and Pool.terminate or Process.terminate of
    anything started during the start-up then waited forever. An exec'd child starts with the default action."""
    with taken_at_start():
        if start == "fork":
            child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
            child.start()
            time.sleep(0.5)  # in its sleep, not still in the fork
            child.terminate()
            child.join(20)
            code = child.exitcode
            if code is None:
                child.kill()
                child.join()
        else:
            proc = subprocess.Popen(["sleep", "60"])
            proc.terminate()
            code = proc.wait(20)
    assert code == -signal.SIGTERM


class Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@pytest.mark.parametrize("held", [False, True])
def test_raising_at_once_raises_in_the_process_ends_a_forked_child_and_gives_the_handlers_back(held):
    """The stop of the commands with no update to finish (generate, evaluate, the demo): the signal raises where
    the process is; a forked worker still dies of TERM (sampling's handler once swallowed it, so Pool.terminate of
    a pool started under it waited forever); a signal held since the command's start raises on entry."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with taken_at_start():
        if held:
            os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(Stopped) as stopped, raising_at_once(LATE_COPIES, Stopped):
            assert not held, "a held stop did not raise on entry"
            child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
            child.start()
            time.sleep(0.5)
            child.terminate()
            child.join(20)
            assert child.exitcode == -signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert stopped.value.signum == (signal.SIGUSR1 if held else signal.SIGTERM)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before and signals._at_start is None


def test_the_verbs_take_the_stop_signals_before_anything_else(monkeypatch, tmp_path):
    """The CLI's first line: compose, preflight and the stage all run with TERM and USR1 held."""
    monkeypatch.chdir(tmp_path)  # the default run directory, ./outputs, may hold another test's run
    import megadalle.cli
    from megadalle.cli import VERBS, main

    assert [verb for verb, spec in VERBS.items() if spec.holds_stop_signals] == [
        "train-dvae", "train-clip", "train", "generate", "evaluate", "demo"]

    held = {}
    monkeypatch.setattr(megadalle.cli, "resolve", lambda verb: lambda cfg: held.setdefault(verb, signals._at_start))
    assert main(["train", "data=synthetic", "model=tiny", "logger=none"]) == 0
    assert main(["plan", "model=tiny"]) == 0
    assert isinstance(held["train"], StopFlag) and held["plan"] is None


@pytest.mark.parametrize("module", ["dvae", "clip"])
def test_train_dvae_and_train_clip_return_the_stop_status(module, monkeypatch):
    """They share the loop and the requeue with `train`."""
    import importlib

    from omegaconf import OmegaConf

    verb = importlib.import_module(f"megadalle.train.{module}")
    monkeypatch.setattr(verb, "fit_and_export", lambda cfg: (Result(Path("run"), 3, True, [1.0]), None))
    assert verb.run(OmegaConf.create({"trainer": {"steps": 100}})) == STOPPED_EXIT


@pytest.mark.parametrize("rank, step, losses, line", [
    (0, 3, [1.0], "[train-dvae] stopped by signal at step 3; run directory run"),
    (0, None, [], "[train-dvae] stopped by signal before its first update, nothing to save: rerunning resumes from "
                  "the last checkpoint; run directory run"),
    (1, 3, [1.0], "")], ids=["in-the-loop", "before-the-first-update", "not-rank-0"])
def test_a_stopped_run_reports_how_it_stopped_on_rank_0_under_its_verb(capsys, rank, step, losses, line):
    Result(Path("run"), step, True, losses, rank, "train-dvae").report()
    assert capsys.readouterr().out.strip() == line


def start_up_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "megadalle", "train", "data=synthetic", "model=tiny", "trainer=tiny",
            "trainer.micro_batch=2", "trainer.warmup_steps=0", "logger=none", f"run_dir={run_dir}", *overrides]


@pytest.mark.distributed
@pytest.mark.parametrize("sig, resumed", [(signal.SIGTERM, False), (signal.SIGUSR1, True)],
                         ids=["TERM-fresh-run", "USR1-resumed-run"])
def test_a_stop_signal_during_start_up_exits_75_with_nothing_written_and_the_rerun_resumes(tmp_path, sig, resumed):
    """Slurm's preemption (TERM) or time-limit warning (USR1) during the start-up killed the task (143): the batch
    script did not requeue it and the run was lost. It now stops before its first update with 75, writes no
    checkpoint, and rerunning (resume=auto) trains on from the last checkpoint."""
    run_dir = tmp_path / "run"
    env = launch.base_env()

    def train(steps: int, stop: bool) -> tuple[int, str]:
        proc = subprocess.Popen(start_up_command(run_dir, f"trainer.steps={steps}"), env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if stop:
                signal_once_taken(proc, sig)
            return proc.wait(timeout=300), proc.stdout.read()
        finally:
            proc.kill()
            proc.stdout.close()

    if resumed:
        assert train(2, stop=False)[0] == 0
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) if resumed else []
    code, out = train(4, stop=True)
    assert code == STOPPED_EXIT, out[-3000:]
    assert f"[train] stopped by signal before its first update, nothing to save: rerunning resumes from the last " \
           f"checkpoint; run directory {run_dir}" in out and "Traceback" not in out, out[-3000:]
    written = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock")
    assert written == [p for p in before if p.name != ".lock"], "a stop before the first update writes nothing"
    code, out = train(4, stop=False)
    assert code == 0, out[-3000:]
    assert (f"resumed from {run_dir}/checkpoints/step_00000002 at step 2" in out) == resumed, out[-3000:]
    assert sorted(launch.losses(run_dir)) == [0, 1, 2, 3]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000004"


@pytest.mark.distributed
def test_a_stop_signal_to_one_rank_during_start_up_stops_every_rank_with_75(tmp_path):
    """A forwarder reaches the ranks one by one: the rank it reached during the start-up stops, and so do the
    others, at the same stage (one rank leaving alone left the others waiting at their next collective)."""
    run_dir = tmp_path / "run"
    port = str(launch.free_port())
    procs = [subprocess.Popen(start_up_command(run_dir, "trainer.steps=4"), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(launch.base_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for rank in range(2)]
    try:
        signal_once_taken(procs[1], signal.SIGUSR1)
        codes = [proc.wait(timeout=300) for proc in procs]
        outs = [proc.stdout.read() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.stdout.close()
    assert codes == [STOPPED_EXIT, STOPPED_EXIT], "\n".join(out[-2000:] for out in outs)
    assert "stopped by signal before its first update" in outs[0], outs[0][-2000:]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


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
