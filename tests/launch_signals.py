"""Stop a launched training run with a signal, as a user or a scheduler would, and check what it leaves."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from megadalle.train.checkpoint_damage import damage
from megadalle.train.signals import LATE_COPIES, STOPPED_EXIT


def stop_after_two_steps(cmd: list[str], env: dict, cwd: Path, run_dir: Path, sig: int, group: bool = False,
                         start_timeout: float = 180) -> str:
    """Start `cmd` (in a session of its own), send `sig` once two steps are logged (to its whole process group
    with `group`, as a terminal's Ctrl-C does), and return its output once it has exited. Asserts that no
    process of the run outlives it, that the ranks checkpointed in their own time (DeepSpeed's launcher was never
    signalled into killing them, and none died of a signal), that it exited with STOPPED_EXIT (a stopped run that
    exited 0 looked finished, and Slurm never requeued it) and that the newest checkpoint is complete.

    (DeepSpeed's launcher logs "Killing subprocess" for every rank once one exits non-zero, 75 included, ranks that
    have exited too: that line alone no longer tells a killed rank.)"""
    metrics = run_dir / "metrics.jsonl"
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + start_timeout
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out = proc.communicate(timeout=180)[0]
        time.sleep(1)
        ranks = subprocess.run(["pgrep", "-f", f"run_dir={run_dir}"], capture_output=True, text=True).stdout.split()
    finally:  # whatever the script left behind (it runs in its own session, its runner in another)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        subprocess.run(["pkill", "-KILL", "-f", f"run_dir={run_dir}"])
    assert not ranks, f"ranks still running after the launcher exited: {ranks}\n{out[-3000:]}"
    assert "Main process received" not in out and "return code = -" not in out, out[-3000:]
    assert proc.returncode == STOPPED_EXIT, f"exit {proc.returncode}\n{out[-3000:]}"
    latest = (run_dir / "checkpoints" / "latest").read_text()
    assert damage(run_dir / "checkpoints" / latest) is None, out[-3000:]
    return out


def caught_signals(pid: int) -> set[int]:
    """The signals process `pid` has a handler for (SigCgt in /proc/PID/status, a bit mask: bit n-1 for signal n)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    raise AssertionError(f"/proc/{pid}/status has no SigCgt line")


def signal_once_taken(proc: subprocess.Popen, sig: int, within: float = 30) -> None:
    """Send `sig` to `proc` as soon as it handles the scheduler's stop signals (USR1, TERM): a training verb takes
    them at its command's first line, seconds before its first update (imports, DeepSpeed's start, the engine)."""
    deadline = time.time() + within
    while not set(LATE_COPIES) <= caught_signals(proc.pid):
        assert proc.poll() is None and time.time() < deadline, \
            f"the stop signals were not taken within {within} s of the start"
        time.sleep(0.01)
    proc.send_signal(sig)
