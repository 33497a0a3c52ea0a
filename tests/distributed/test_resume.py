"""SIGKILL mid-training, restart: the following losses equal an uninterrupted run's, bit for bit.

Two ranks (ZeRO-1, dropout on, so the per-rank RNG states matter). The killed run is also left
with an unfinished checkpoint that `latest` points at (as if the kill hit during a save), so the
restart must fall back to the previous complete checkpoint and still reproduce every loss.
The restart logs to wandb (offline, rank 0 only) under the run id the killed job stored in its checkpoint.
"""
import os
import signal
import time

import pytest
import torch

import dist_launch as launch

OPTS = {"zero_stage": 1, "steps": 9, "checkpoint_every": 3, "dropout": True}


def wait_for_step(run_dir, step, procs, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").is_file() and step in launch.losses(run_dir):
            return
        assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
        time.sleep(0.1)
    raise AssertionError(f"step {step} never logged")


@pytest.mark.distributed
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    launch.run(2, {**OPTS, "run_dir": str(tmp_path / "ref")}, tmp_path / "ref_logs")
    reference = launch.losses(tmp_path / "ref")

    run_dir = tmp_path / "killed"
    procs = launch.spawn(2, {**OPTS, "run_dir": str(run_dir), "step_sleep": 0.4}, tmp_path / "kill_logs")
    wait_for_step(run_dir, 4, procs)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_00000003"
    first_id = torch.load(ckpts / "step_00000003" / "mp_rank_00_model_states.pt", weights_only=True)["wandb_id"]
    (ckpts / "step_00000006").mkdir()
    (ckpts / "step_00000006" / "mp_rank_00_model_states.pt").write_bytes(b"half a file")
    (ckpts / "latest").write_text("step_00000006")

    launch.run(2, {**OPTS, "run_dir": str(run_dir), "wandb": "offline"}, tmp_path / "resume_logs")
    log = (tmp_path / "resume_logs" / "rank0.log").read_text()
    assert "step_00000006, which is damaged" in log and "resumed from" in log and "step_00000003 at step 3" in log
    resumed = launch.losses(run_dir)
    assert sorted(resumed) == list(range(9))
    for step in range(3, 9):
        assert resumed[step] == reference[step], (step, resumed, reference)

    check_wandb(run_dir, first_id)


def check_wandb(run_dir, first_id):
    """The restart logged (rank 0 only: one offline run) under the id the killed job stored."""
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].endswith("-" + first_id), (runs, first_id)
    state = torch.load(run_dir / "checkpoints" / "step_00000009" / "mp_rank_00_model_states.pt", weights_only=True)
    assert state["wandb_id"] == first_id and state["step"] == 9 and state["samples_seen"] == 9 * 4
    record = next((run_dir / "wandb" / runs[0]).glob("run-*.wandb")).read_bytes()
    assert all(key in record for key in (b"loss", b"grad_norm", b"tokens_per_s", b"mfu", b"skipped_steps"))
