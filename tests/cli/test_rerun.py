"""Runs that resume by rerunning: a stable run directory per task and name, a refused config change,
and Ctrl-C (SIGINT) that checkpoints and stops like SIGUSR1."""
import contextlib
import errno
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megadalle import folder_lock
from megadalle.cli import main
from megadalle.train import rundir
from megadalle.train.signals import STOPPED_EXIT


def test_default_run_directory_is_stable_per_task_and_name():
    assert rundir.path_for(None, "out", "transformer", None, {}) == Path("out/transformer/default")
    assert rundir.path_for(None, "out", "dvae", "big", {}) == Path("out/dvae/big")
    assert rundir.path_for(None, "out", "clip", None, {"SLURM_JOB_ID": "42"}) == Path("out/clip/slurm-42")
    assert rundir.path_for(None, "out", "clip", "x", {"SLURM_JOB_ID": "42"}) == Path("out/clip/x")
    assert rundir.path_for("/runs/a", "out", "clip", "x", {"SLURM_JOB_ID": "42"}) == Path("/runs/a")


def test_config_diff_names_what_matters_and_allows_what_may_change():
    saved = {"seed": 0, "trainer": {"steps": 10, "lr": 1e-3, "log_every": 5}, "logger": {"mode": "offline"},
             "model": {"n_layers": 4, "attention_pattern": ["row"]}, "run_dir": None}
    same_run = {"seed": 0, "trainer": {"steps": 50, "lr": 1e-3, "log_every": 1}, "logger": {"mode": "disabled"},
                "model": {"n_layers": 4, "attention_pattern": ["row"]}, "run_dir": "/x"}
    assert rundir.config_diff(saved, same_run) == []
    other = {**same_run, "trainer": {"steps": 10, "lr": 3e-4, "log_every": 5},
             "model": {"n_layers": 4, "attention_pattern": ["column"]}}
    assert rundir.config_diff(saved, other) == [("model.attention_pattern", ["row"], ["column"]),
                                                ("trainer.lr", 1e-3, 3e-4)]


def test_a_rerun_may_export_elsewhere_preview_otherwise_and_add_validation():
    """None of these reaches the training: train-dvae/train-clip's `weights` is the export path, `preview` the
    reconstruction grid's size, and validation runs on its own data (null = <shards>/val, named or not)."""
    saved = {"weights": None, "preview": 8, "data": {"shards": "s", "val_shards": None}}
    assert rundir.config_diff(saved, {"weights": "other.safetensors", "preview": 4,
                                      "data": {"shards": "s", "val_shards": "s/val"}}) == []
    assert rundir.config_diff(saved, {**saved, "data": {"shards": "t", "val_shards": None}}) == []  # moved data


def test_a_rerun_may_change_a_key_that_does_nothing_in_either_layout():
    """An fp32 run has no bf16 dtypes to accumulate or reduce in, ZeRO-1 no optimizer sub-groups: changing them was
    refused as a change to the training. Where the run trains in bf16 (or may: `auto` on a GPU) or under ZeRO-3, it
    still is."""
    fp32 = {"trainer": {"precision": "fp32"},
            "deepspeed": {"zero_stage": 1, "grad_accum_dtype": "fp32", "communication_dtype": "fp32",
                          "zero3_sub_group_blocks": 1.0}}
    inert = {**fp32, "deepspeed": {"zero_stage": 1, "grad_accum_dtype": "bf16", "communication_dtype": "bf16",
                                   "zero3_sub_group_blocks": 4.0}}
    assert rundir.config_diff(fp32, inert) == []
    for precision in ("bf16", "auto"):
        bf16 = {**fp32, "trainer": {"precision": precision}}
        assert rundir.config_diff(bf16, {**inert, "trainer": {"precision": precision}}) == [
            ("deepspeed.communication_dtype", "fp32", "bf16"), ("deepspeed.grad_accum_dtype", "fp32", "bf16")]
    zero3 = {**fp32, "deepspeed": {**fp32["deepspeed"], "zero_stage": 3}}
    regrouped = {**zero3, "deepspeed": {**zero3["deepspeed"], "zero3_sub_group_blocks": 4.0}}
    assert rundir.config_diff(zero3, regrouped) == [("deepspeed.zero3_sub_group_blocks", 1.0, 4.0)]
    assert rundir.config_diff(fp32, {**inert, "trainer": {"precision": "bf16"}}) == [
        ("deepspeed.communication_dtype", "fp32", "bf16"), ("deepspeed.grad_accum_dtype", "fp32", "bf16"),
        ("trainer.precision", "fp32", "bf16")]


@pytest.mark.distributed
def test_an_fp32_zero1_run_resumes_with_other_bf16_dtypes_and_sub_groups(train_overrides, tmp_path, capsys):
    command = ["train", *train_overrides, f"run_dir={tmp_path / 'run'}", "trainer.precision=fp32"]
    assert main([*command, "trainer.steps=2"]) == 0
    assert main([*command, "trainer.steps=3", "deepspeed.grad_accum_dtype=bf16",
                 "deepspeed.zero3_sub_group_blocks=4"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main([*command, "trainer.steps=4", "trainer.precision=bf16"]) == 2
    assert "holds a run with another config: deepspeed.grad_accum_dtype ('bf16' there, 'fp32' now), " \
        "trainer.precision ('fp32' there, 'bf16' now); rerun with the same values to resume" in capsys.readouterr().err
    assert main([*command, "trainer.steps=4", "deepspeed=zero2"]) == 2  # the group option typed, named back
    assert "deepspeed.zero_stage (1 there, 2 now); rerun with the same values (deepspeed=zero1 sets them) to " \
        "resume it" in capsys.readouterr().err


@pytest.mark.distributed
def test_rerunning_the_same_command_resumes_and_another_config_is_refused(train_overrides, tmp_path, capsys):
    command = ["train", *train_overrides, f"out_dir={tmp_path}", "name=exp"]
    run = tmp_path / "transformer" / "exp"
    assert main([*command, "trainer.steps=2"]) == 0
    assert (run / "checkpoints" / "latest").read_text() == "step_00000002"
    capsys.readouterr()
    assert main([*command, "trainer.steps=3"]) == 0  # trainer.steps may grow: the run goes on
    assert f"resumed from {run.resolve()}/checkpoints/step_00000002 at step 2" in capsys.readouterr().out
    assert (run / "checkpoints" / "latest").read_text() == "step_00000003"
    assert json.loads((run / "run.json").read_text())["config"]["trainer"]["steps"] == 3  # the record follows
    assert main([*command, "trainer.steps=3", "trainer.lr=0.002", "model.n_layers=8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{run} holds a run with another config: model.n_layers (4 there, 8 now), trainer.lr (0.001 there, " \
           "0.002 now); rerun with the same values (model=tiny trainer=tiny set them) to resume it, or start a new " \
           "run with name=" in err
    assert main([*command, "trainer.steps=3", "trainer.lr=0.002", "name=exp2"]) == 0
    assert (tmp_path / "transformer" / "exp2" / "checkpoints" / "latest").is_file()


@pytest.mark.distributed
def test_a_run_that_saved_no_checkpoint_is_not_offered_to_resume(tmp_path, capsys):
    """Killed before its first save (an out-of-memory at the first update, a divergence at ZeRO stage 0), a run was
    refused with another config "to resume it": with the values that had just failed, and nothing to resume."""
    run = tmp_path / "run"
    command = ["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=1", "data.num_workers=0",
               "logger=none", f"run_dir={run}"]
    assert main(command) == 0
    shutil.rmtree(run / "checkpoints")  # as a run killed before it saved
    capsys.readouterr()
    assert main([*command, "trainer.lr=0.002"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"megadalle train: {run} holds the start of a run with another config that saved no checkpoint: trainer.lr "
        f"(0.001 there, 0.002 now); remove {run} to start it over with these values, rerun with the same values "
        "(trainer=tiny sets them) to start it again, or start a new run with name=<new name> (or run_dir=)")
    shutil.rmtree(run)
    assert main([*command, "trainer.lr=0.002"]) == 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_optimizer_kernel_may_change_at_a_resume(tmp_path, precision, capsys):
    """`trainer.fused_optimizer` picks torch's kernel for the same AdamW and state: a rerun was refused it, so a user
    whose fused kernel failed on a new machine could not switch it for the running run."""
    command = ["train", "data=synthetic", "model=tiny", "trainer=tiny", "data.num_workers=0", "logger=none",
               "trainer.warmup_steps=0", "trainer.log_every=1", f"trainer.precision={precision}"]
    assert main([*command, "trainer.steps=3", f"run_dir={tmp_path / 'whole'}"]) == 0
    assert main([*command, "trainer.steps=1", f"run_dir={tmp_path / 'run'}"]) == 0
    capsys.readouterr()
    assert main([*command, "trainer.steps=3", "trainer.fused_optimizer=false", f"run_dir={tmp_path / 'run'}"]) == 0
    assert "at step 1" in capsys.readouterr().out
    whole, switched = ({r["step"]: r["loss"] for r in map(json.loads, (tmp_path / name / "metrics.jsonl").open())}
                       for name in ("whole", "run"))
    assert switched[2] == pytest.approx(whole[2], rel=1e-3 if precision == "bf16" else 1e-5)  # Adam's state went on


def test_a_tokenizer_retrained_in_place_does_not_resume(train_overrides, token_data, tmp_path, capsys):
    """data.tokenizer names the same path after `megadalle tokenizer` wrote another model there: resuming would
    train on other ids in silence. run.json records the tokenizer's sha256 and the rerun is refused."""
    from megadalle.data.digest import sha256
    from megadalle.data.tokenizer import train_tokenizer

    shards, tok = token_data
    mine = tmp_path / "tok.model"
    mine.write_bytes(tok.read_bytes())
    command = ["train", *train_overrides, f"data.tokenizer={mine}", "trainer.steps=1", f"run_dir={tmp_path / 'run'}"]
    assert main(command) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["sha256"] == {"data.tokenizer": sha256(mine)}
    train_tokenizer(tok.parent / "captions", mine, vocab_size=36)
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle train: data.tokenizer={mine}: not the tokenizer the run in {tmp_path / 'run'} "
                          "trained with") and err.count("\n") == 1


@pytest.mark.distributed
def test_validation_switched_on_at_a_resume_leaves_the_training_as_it_was(train_overrides, token_data, tmp_path):
    shards, _ = token_data
    common = [*train_overrides, f"data.val_shards={shutil.copytree(shards, tmp_path / 'val')}"]
    assert main(["train", *common, "trainer.steps=4", f"run_dir={tmp_path / 'whole'}"]) == 0
    assert main(["train", *common, "trainer.steps=2", f"run_dir={tmp_path / 'parts'}"]) == 0
    assert main(["train", *common, "trainer.steps=4", "trainer.eval_every=1", "trainer.eval_batches=2",
                 f"run_dir={tmp_path / 'parts'}"]) == 0

    def records(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    def losses(run: str) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in records(run) if "loss" in r}

    assert {step: loss for step, loss in losses("parts").items() if step >= 2} == \
           {step: loss for step, loss in losses("whole").items() if step >= 2}
    assert any("val/loss" in r for r in records("parts")) and not any("val/loss" in r for r in records("whole"))
    saved = {"trainer": {"steps": 4}, "dvae_weights": None, "media_captions": 4}
    assert rundir.config_diff(saved, {"trainer": {"steps": 4}, "dvae_weights": "d.safetensors",
                                      "media_captions": 8}) == []  # grids may be switched on too


@pytest.mark.distributed
def test_a_run_resumed_with_more_steps_follows_the_longer_curve_from_its_first_update(train_overrides, tmp_path):
    common = [*train_overrides, "trainer.warmup_steps=1", "trainer.log_every=1"]
    assert main(["train", *common, "trainer.steps=4", f"run_dir={tmp_path / 'whole'}"]) == 0
    assert main(["train", *common, "trainer.steps=2", f"run_dir={tmp_path / 'parts'}"]) == 0
    assert main(["train", *common, "trainer.steps=4", f"run_dir={tmp_path / 'parts'}"]) == 0

    def curve(run: str) -> dict[int, tuple[float, float]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: (r["lr"], r["loss"]) for r in map(json.loads, lines) if "lr" in r}

    whole, parts = curve("whole"), curve("parts")
    assert parts[2][0] > 0 and {s: parts[s] for s in (2, 3)} == {s: whole[s] for s in (2, 3)}, (parts, whole)


@pytest.mark.distributed
def test_a_resume_that_moves_the_learning_rate_says_so_and_decay_steps_keeps_the_curve(train_overrides, tmp_path,
                                                                                         capsys):
    """trainer.steps may change at a resume, and with it the decay: a finished 3-update cosine (at min_lr) resumed
    to 6 updates jumps back up. The rerun says so, naming trainer.decay_steps, which a rerun may set."""
    command = ["train", *train_overrides, "trainer.warmup_steps=0", f"run_dir={tmp_path / 'run'}"]
    assert main([*command, "trainer.steps=3"]) == 0
    capsys.readouterr()
    assert main([*command, "trainer.steps=6"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "[train] warning: the learning rate at step 3, where the run resumes, " \
        "is 0.00055 now and 0.0001 on the curve it trained on (trainer.steps=3 there, 6 now): the schedule changes " \
        "from here; add trainer.decay_steps=3 to keep the old curve" in err, err
    assert main([*command, "trainer.steps=8", "trainer.decay_steps=6"]) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out and "warning" not in captured.err, captured.err


@pytest.mark.distributed
def test_the_learning_rate_warning_compares_with_the_curve_the_checkpoint_trained_on(train_overrides, tmp_path,
                                                                                    capsys):
    """run.json holds the config of the latest start: one that changed trainer.steps and died before a save (here
    written in by hand) made the next resume warn against a curve its checkpoint never trained on, and advise the
    trainer.decay_steps of that curve. Each checkpoint records its own curve (schedule.SCHEDULE)."""
    command = ["train", *train_overrides, "trainer.warmup_steps=0", f"run_dir={tmp_path / 'run'}"]
    assert main([*command, "trainer.steps=3"]) == 0
    record = tmp_path / "run" / rundir.RUN_JSON
    saved = json.loads(record.read_text())
    saved["config"]["trainer"]["steps"] = 3000
    record.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main([*command, "trainer.steps=4", "trainer.decay_steps=3"]) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out and "warning" not in captured.err, captured.err


@pytest.mark.distributed
def test_a_copied_run_directory_logs_to_a_new_wandb_run_and_a_moved_one_to_its_own(train_overrides, tmp_path,
                                                                                  capsys):
    """A copy carries the original's checkpoints, whose wandb id put both runs' curves in one wandb run. The id
    belongs to the directory (wandb_id.json: its path and inode): a copy takes a new one, a rename keeps it. With
    logger=none nothing is said of it (test_wandb_id.py has the note), as no wandb run is logged to."""
    import shutil

    import torch

    def wandb_id(run: Path, step: int) -> str:
        return torch.load(run / "checkpoints" / f"step_{step:08d}" / "mp_rank_00_model_states.pt",
                          weights_only=True)["wandb_id"]

    first, copy, moved = tmp_path / "first", tmp_path / "copy", tmp_path / "moved"
    assert main(["train", *train_overrides, "trainer.steps=2", f"run_dir={first}"]) == 0
    original = wandb_id(first, 2)
    shutil.copytree(first, copy)
    capsys.readouterr()
    assert main(["train", *train_overrides, f"run_dir={copy}"]) == 0
    assert wandb_id(copy, 3) != original and "[wandb]" not in capsys.readouterr().err
    first.rename(moved)
    assert main(["train", *train_overrides, f"run_dir={moved}"]) == 0
    assert wandb_id(moved, 3) == original and "[wandb]" not in capsys.readouterr().err
    assert json.loads((moved / "wandb_id.json").read_text())["path"] == str(moved.resolve())


@pytest.mark.distributed
def test_ctrl_c_saves_a_checkpoint_and_stops(train_overrides, tmp_path):
    run = tmp_path / "transformer" / "default"
    command = [sys.executable, "-m", "megadalle", "train", *train_overrides, f"out_dir={tmp_path}",
               "trainer.steps=100000", "trainer.checkpoint_every=0", "data.num_workers=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == STOPPED_EXIT, err[-3000:]
    assert "Ctrl-C: saving a checkpoint after this update" in err and "Traceback" not in err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    latest = (run / "checkpoints" / "latest").read_text()
    assert latest == f"step_{len(steps):08d}" and 2 <= len(steps) < 100000
    assert f"stop signal, checkpoint saved at step {len(steps)}" in out + err


def test_a_run_directory_is_locked_by_one_run_at_a_time(tmp_path):
    first = rundir.RunLock(tmp_path, {"SLURM_JOB_ID": "41"})
    with pytest.raises(rundir.RunDirError) as refused:
        rundir.RunLock(tmp_path)
    assert str(refused.value) == (f"{tmp_path} is in use by a run (host {socket.gethostname()}, pid "
                                  f"{os.getpid()}, Slurm job 41); wait for it to end or stop it, or start a new run "
                                  "with name=<new name> (or run_dir=); if that process is gone (NFSv3 keeps a dead "
                                  f"node's lock until it reboots), remove {tmp_path / '.lock'}")
    first.release()
    first.release()
    rundir.RunLock(tmp_path).release()  # free again once released, as it is once its process dies


def test_a_released_lock_is_free_while_a_forked_worker_still_shares_its_file(tmp_path):
    """DataLoader workers fork with the lock's file open: closing the run's copy alone kept the lock held."""
    lock = rundir.RunLock(tmp_path)
    worker = mp.get_context("fork").Process(target=time.sleep, args=(30,))
    worker.start()
    try:
        lock.release()
        rundir.RunLock(tmp_path).release()
    finally:
        worker.kill()
        worker.join()


ORPHAN = """
import multiprocessing as mp, os, sys, time
from pathlib import Path
from megadalle.train import rundir

def worker():  # says its pid once it runs, after the fork hooks: the parent's print raced the child's hook
    print(os.getpid(), flush=True)
    time.sleep(60)

lock = rundir.RunLock(Path(sys.argv[1]))
mp.get_context("fork").Process(target=worker).start()
time.sleep(60)
"""


def test_a_killed_runs_orphaned_worker_does_not_keep_its_lock(tmp_path):
    """A SIGKILLed run's DataLoader worker lives on for seconds: it shared the flocked file, and a rerun at once
    was refused naming the dead pid. A forked child closes its copy: the lock ends with the run."""
    run = subprocess.Popen([sys.executable, "-c", ORPHAN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(run.stdout.readline())
        run.kill()
        run.wait()
        os.kill(worker, 0)  # the orphan still lives
        rundir.RunLock(tmp_path).release()
    finally:
        run.kill()
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


def test_a_file_system_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    """Lustre mounted noflock and some FUSE file systems raise ENOSYS/EOPNOTSUPP: every run failed with a traceback."""
    def no_flock(fd, operation):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(folder_lock.fcntl, "flock", no_flock)
    lock = rundir.RunLock(tmp_path)
    assert lock.fd is None and "this file system cannot lock" in capsys.readouterr().err
    lock.release()


@pytest.mark.distributed
def test_a_second_run_on_a_busy_run_directory_is_refused_and_a_rerun_resumes(train_overrides, tmp_path):
    """Two jobs on one run directory resumed from each other's checkpoints and set aside each other's newer
    ones: the second is refused (exit 2, one line naming the first) before it reads any checkpoint."""
    run = tmp_path / "run"  # explicit: a Slurm job id would name the default directory after the job
    command = [sys.executable, "-m", "megadalle", "train", *train_overrides, f"run_dir={run}",
               "trainer.checkpoint_every=1", "data.num_workers=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    first = subprocess.Popen([*command, "trainer.steps=100000"], env=dict(env, SLURM_JOB_ID="7001"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "latest").is_file():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        second = subprocess.run([*command, "trainer.steps=100000"], env=env, capture_output=True, text=True,
                                timeout=240)
        assert first.poll() is None
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == STOPPED_EXIT, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.count("\n") == 1 and second.stderr.startswith(
        f"megadalle train: {run.resolve()} is in use by a run (host {socket.gethostname()}, pid {first.pid}, "
        "Slurm job 7001)"), second.stderr
    assert "resumed" not in second.stdout
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(len(steps)))  # one run's steps, none logged twice
    rerun = subprocess.run([*command, f"trainer.steps={len(steps) + 1}"], env=env, capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {run.resolve()}/checkpoints/step_{len(steps):08d} at step {len(steps)}" in rerun.stdout


def test_a_resume_may_raise_the_timeout_and_change_what_only_sets_memory():
    """A resume on another rank count waits while rank 0 converts the checkpoint: at 12B that outlasts the default
    timeout, and raising it was refused. ZeRO-3's sub-groups shape the saved optimizer state and stay fixed."""
    saved = {"deepspeed": {"timeout_minutes": 30.0, "zero3_window_blocks": 2.0, "zero3_sub_group_blocks": 1.0},
             "trainer": {"keep_freed_memory": True}}
    assert rundir.config_diff(saved, {"deepspeed": {"timeout_minutes": 240.0, "zero3_window_blocks": 4.0,
                                                    "zero3_sub_group_blocks": 1.0},
                                      "trainer": {"keep_freed_memory": False}}) == []
    assert rundir.config_diff(saved, {**saved, "deepspeed": {**saved["deepspeed"], "zero3_sub_group_blocks": 2.0}}) \
        == [("deepspeed.zero3_sub_group_blocks", 1.0, 2.0)]
