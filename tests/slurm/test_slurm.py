"""Slurm for real: a one-node cluster on localhost runs launch/slurm/train.sbatch with 2 tasks;
USR1 (what `--signal=B:USR1@120` sends before the time limit) or a TERM to the tasks alone (what a
preemption with a grace period sends) makes it checkpoint and requeue itself, and the requeued job
resumes and finishes the run; the same TERM during the tasks' start-up requeues it too; a TERM to the
batch script (a user's scancel) checkpoints and stops.

The cluster comes from tests/slurm/cluster.sh (installs slurm-wlm + munge with apt when missing;
the test skips with the reason where it cannot).
The CPU job overrides only the sbatch script's resource lines (1 node, 2 tasks, no GPUs).
"""
import subprocess
import time
from pathlib import Path

import pytest
from slurm_jobs import FINISHED, job_field, logged_steps, node_idle, wait_until

from megadalle.train.signals import LATE_COPIES
from tests.launch_signals import caught_signals

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SCRIPT = ROOT / "launch" / "slurm" / "train.sbatch"
STEPS = 40


def submit(env, train_overrides, tmp_path, run_dir, started: bool = True) -> str:
    """Submit the script for 2 CPU tasks of STEPS updates; returns the job id once the first steps are logged (at
    once unless `started`)."""
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--gpus-per-node=0",
           "--cpus-per-task=1", "--time=10", f"--output={tmp_path}/job-%j.out", str(SCRIPT),
           *train_overrides, "trainer.grad_accum=1", f"trainer.steps={STEPS}", "trainer.checkpoint_every=100",
           f"run_dir={run_dir}"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    if started:
        wait_until(lambda: len(logged_steps(run_dir)) >= 3, 180, "the first training steps")
    return job


def tasks_holding_stop_signals(run_dir: Path) -> bool:
    """Whether both tasks of the job on `run_dir` run Python and handle USR1 and TERM (the batch script and srun
    have the run directory on their command lines too)."""
    found = subprocess.run(["pgrep", "-f", f"^[^ ]*python[^ ]* -u -m megadalle train .*run_dir={run_dir}( |$)"],
                           capture_output=True, text=True).stdout.split()
    try:
        return len(found) == 2 and all(set(LATE_COPIES) <= caught_signals(int(pid)) for pid in found)
    except FileNotFoundError:  # a task that has just exited
        return False


@pytest.mark.slurm
@pytest.mark.parametrize("scancel", [["--signal=USR1", "--batch"], ["--signal=TERM"]], ids=["usr1", "preempt-term"])
def test_a_stop_signal_checkpoints_requeues_and_finishes(slurm, train_overrides, tmp_path, scancel):
    """`--signal=TERM` without `--batch` signals the tasks alone, as a preemption with a grace period does: the
    tasks checkpointed and exited 0, and the job ended COMPLETED, never requeued."""
    run_dir = tmp_path / "run"
    env = dict(slurm, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    job = submit(env, train_overrides, tmp_path, run_dir)
    log = tmp_path / f"job-{job}.out"
    subprocess.run(["scancel", *scancel, job], env=env, check=True)
    wait_until(lambda: job_field(env, job, "Restarts") == "1", 120, "the requeue")
    assert (run_dir / "checkpoints" / "latest").is_file()
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert 3 <= stopped_at < STEPS, stopped_at
    # Slurm holds a requeued batch job back ~2 minutes (its BeginTime) so the old launch credential,
    # revoked at one-second resolution, cannot match the new one. Release it once the node is idle
    # and a few seconds have passed, instead of waiting the two minutes.
    wait_until(lambda: job_field(env, job, "JobState") == "PENDING" and node_idle(env), 60, "the node to be idle")
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
    wait_until(lambda: job_field(env, job, "JobState") in FINISHED, 240,
               "the requeued job to end")

    text = log.read_text(errors="replace")
    assert job_field(env, job, "JobState") == "COMPLETED", text[-4000:]
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    assert f"rendezvous {host}:" in text and "1 CPUs per task" in text
    assert f"checkpoint saved at step {stopped_at}" in text and ("USR1" in text) == ("--batch" in scancel)
    assert f"requeueing job {job} (srun exit 75)" in text and "restart 1" in text
    assert f"resumed from {run_dir}/checkpoints/step_{stopped_at:08d} at step {stopped_at}" in text
    assert logged_steps(run_dir) == set(range(STEPS))
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{STEPS:08d}"


@pytest.mark.slurm
def test_a_preemption_during_the_start_up_requeues(slurm, train_overrides, tmp_path):
    """A preemption's TERM to the tasks before their first update killed them (143): the script did not requeue,
    and the job ended FAILED. They now stop together with 75, nothing saved, and the job requeues itself."""
    run_dir = tmp_path / "run"
    env = dict(slurm, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    job = submit(env, train_overrides, tmp_path, run_dir, started=False)
    try:
        wait_until(lambda: tasks_holding_stop_signals(run_dir), 60, "the tasks to start")
        assert not logged_steps(run_dir)
        subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)
        wait_until(lambda: job_field(env, job, "Restarts") == "1", 120, "the requeue")
    finally:
        subprocess.run(["scancel", job], env=env)  # the requeued attempt is the first test's
    text = (tmp_path / f"job-{job}.out").read_text(errors="replace")
    assert "0: [train] stopped by signal before its first update" in text, text[-4000:]
    assert f"requeueing job {job} (srun exit 75)" in text, text[-4000:]
    assert not (run_dir / "checkpoints").exists() and not logged_steps(run_dir)


@pytest.mark.slurm
def test_a_term_to_the_batch_script_checkpoints_and_does_not_requeue(slurm, train_overrides, tmp_path):
    """`scancel --signal=TERM --batch` (or `--signal=B:TERM@N`): the script TERMed srun, which SIGKILLs every task at
    once, and the run lost everything since its last checkpoint. The tasks now get USR1; a user's TERM never
    requeues."""
    run_dir = tmp_path / "run"
    env = dict(slurm, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    job = submit(env, train_overrides, tmp_path, run_dir)
    subprocess.run(["scancel", "--signal=TERM", "--batch", job], env=env, check=True)
    wait_until(lambda: job_field(env, job, "JobState") in FINISHED, 180, "the job to end")

    text = (tmp_path / f"job-{job}.out").read_text(errors="replace")
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert 3 <= stopped_at < STEPS, text[-4000:]
    assert f"0: [train] rank 0: stop signal, checkpoint saved at step {stopped_at}" in text, text[-4000:]
    assert "no requeue" in text and "requeueing" not in text and "Killed" not in text, text[-4000:]
    assert job_field(env, job, "Restarts") == "0" and job_field(env, job, "ExitCode") == "75:0", text[-4000:]
