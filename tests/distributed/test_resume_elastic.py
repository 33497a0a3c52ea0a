"""Resume on another data-parallel size (train/universal.py): ZeRO-2 and ZeRO-3 (every tensor partitioned)
on 2 ranks, resumed on 1 and on 4.

The uninterrupted run (2 ranks, global batch 8 = 2 x 2 x 2) saves at step 3 and goes on to step 6.
Its step-3 checkpoint is copied into two new runs, resumed on 1 rank (2 x 4 x 1) and on 4 ranks
(2 x 1 x 4): each continues from step 3, reads exactly the samples of the uninterrupted run's global
batches (as a multiset per step: none missing, none repeated), its first loss equals the
uninterrupted one within 1e-5, and its re-sliced EMA ends where the uninterrupted EMA ends.
What is not supported (a pipeline on another data-parallel size, another global batch) is refused
before anything is built, with the reason.
"""
import json
import os
import shutil
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from megadalle.processes import owner_tag
from megadalle.train.consolidate import load_run
from megadalle.train.checkpoint import CheckpointError
from megadalle.train import universal
from megadalle.train.universal import Layout, needs_conversion

import dist_launch as launch

OPTS = {"steps": 6, "micro_batch": 2, "checkpoint_every": 3, "keep_checkpoints": 0, "dropout": False, "ema": 0.5}
STAGES = {"zero2": {"zero_stage": 2},
          "zero3": {"zero_stage": 3, "ds_extra": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}}}
N = 3


def samples(record_dir: Path) -> dict[int, Counter]:
    """step -> multiset of the samples (token rows) all data-parallel ranks read at that step."""
    seen: dict[int, Counter] = {}
    for file in record_dir.glob("dp*.jsonl"):
        for line in file.read_text().splitlines():
            entry = json.loads(line)
            seen.setdefault(entry["step"], Counter()).update(tuple(row) for row in entry["rows"])
    return seen


@pytest.fixture(scope="module", params=list(STAGES))
def uninterrupted(request, tmp_path_factory):
    """(run root, options) of the uninterrupted 2-rank run of one ZeRO stage."""
    opts = {**OPTS, **STAGES[request.param]}
    root = tmp_path_factory.mktemp(f"uninterrupted-{request.param}")
    (root / "record").mkdir()
    launch.run(2, {**opts, "grad_accum": 2, "run_dir": str(root / "run"), "record": str(root / "record")},
               root / "logs")
    return root, opts


@pytest.mark.distributed
def test_each_rank_saves_only_its_share_of_the_optimizer(uninterrupted):
    """fp32 master and Adam's two moments of the rank's half of the parameters, 12 bytes each: not the whole
    flat weights that a ZeRO-2 master shared with them (engine.share_fp32_masters) is a view of."""
    root, _ = uninterrupted
    params = sum(p.numel() for p in load_run(root / "run")[0].parameters())
    step = root / "run" / "checkpoints" / f"step_{N:08d}"
    for rank in (0, 1):
        size = (step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").stat().st_size
        assert size < 1.05 * 12 * params / 2 + 16384, (rank, size, params)


@pytest.mark.distributed
@pytest.mark.parametrize("world,grad_accum", [(1, 4), (4, 1)])
def test_resume_on_another_data_parallel_size(world, grad_accum, uninterrupted, tmp_path):
    uninterrupted, opts = uninterrupted
    run_dir, record = tmp_path / "run", tmp_path / "record"
    (run_dir / "checkpoints").mkdir(parents=True)
    record.mkdir()
    shutil.copy(uninterrupted / "run" / "run.json", run_dir)
    shutil.copytree(uninterrupted / "run" / "checkpoints" / f"step_{N:08d}", run_dir / "checkpoints" / f"step_{N:08d}")
    (run_dir / "checkpoints" / "latest").write_text(f"step_{N:08d}")

    launch.run(world, {**opts, "grad_accum": grad_accum, "run_dir": str(run_dir), "record": str(record)},
               tmp_path / "logs", timeout=600)  # rank 0 converts the checkpoint first
    log = (tmp_path / "logs" / "rank0.log").read_text()
    assert f"at step {N}" in log and "converting" in log
    converted = run_dir / "checkpoints" / f"step_{N:08d}"
    assert (converted / "universal" / "zero").is_dir() and (converted / "latest_universal").read_text() == "universal"
    if world > 2:
        assert "rng_rank00003.pt is missing" in (tmp_path / "logs" / "rank3.log").read_text()

    reference, resumed = launch.losses(uninterrupted / "run"), launch.losses(run_dir)
    assert sorted(resumed) == list(range(N, OPTS["steps"]))
    assert resumed[N] == pytest.approx(reference[N], abs=1e-5)
    for step in resumed:
        assert resumed[step] == pytest.approx(reference[step], abs=1e-4), (step, resumed, reference)

    expected, got = samples(uninterrupted / "record"), samples(record)
    assert sorted(got) == list(range(N, OPTS["steps"]))
    for step in got:
        assert got[step] == expected[step] and sum(got[step].values()) == 8, step

    ema_after = load_run(run_dir, ema=True)[0].state_dict()
    ema_reference = load_run(uninterrupted / "run", ema=True)[0].state_dict()
    for name, value in ema_reference.items():
        torch.testing.assert_close(ema_after[name], value, rtol=1e-4, atol=1e-5)


def test_refusals_name_what_is_supported(tmp_path):
    zero2 = Layout(dp_world=2, pipeline_stages=1, zero_stage=2, global_batch=8)
    assert not needs_conversion(zero2, zero2, tmp_path)
    assert not needs_conversion(None, zero2, tmp_path)  # saved before layouts were recorded: load as is
    assert needs_conversion(zero2, Layout(4, 1, 2, 8), tmp_path)
    with pytest.raises(CheckpointError, match="global batch of 8 samples, this run has 16.*= 4"):
        needs_conversion(zero2, Layout(2, 1, 2, 16), tmp_path)
    with pytest.raises(CheckpointError, match="pipeline run resumes only on the same number of ranks \\(4\\)"):
        needs_conversion(Layout(2, 2, 1, 8), Layout(1, 2, 1, 8), tmp_path)
    assert needs_conversion(Layout(2, 1, 3, 8), Layout(4, 1, 3, 8), tmp_path)
    with pytest.raises(CheckpointError, match="ZeRO stage 0 on 2; .* supported for ZeRO stages 1, 2 and 3"):
        needs_conversion(Layout(2, 1, 0, 8), Layout(4, 1, 0, 8), tmp_path)
    with pytest.raises(CheckpointError, match="zero_stage=1, this run has .* zero_stage=2"):
        needs_conversion(Layout(2, 1, 1, 8), Layout(4, 1, 2, 8), tmp_path)


def test_a_global_batch_the_new_rank_count_cannot_divide_names_the_rank_counts_that_can(tmp_path):
    """After losing a node (8 ranks -> 6) the message asked for trainer.micro_batch * trainer.grad_accum = 1.33333."""
    with pytest.raises(CheckpointError) as lost_node:
        needs_conversion(Layout(8, 1, 2, 8), Layout(6, 1, 2, 6), tmp_path)
    assert str(lost_node.value).endswith("the global batch of 8 is not divisible by 6 data-parallel ranks; resume on "
                                         "a rank count whose data-parallel size divides it: 1, 2, 4, 8 ranks")
    with pytest.raises(CheckpointError) as big:
        needs_conversion(Layout(64, 1, 3, 512), Layout(56, 1, 3, 448), tmp_path)
    assert str(big.value).endswith("divides it: 8, 16, 32, 64 ranks")
    with pytest.raises(CheckpointError) as divides:
        needs_conversion(Layout(2, 1, 2, 8), Layout(2, 1, 2, 16), tmp_path)
    assert str(divides.value).endswith("keep the global batch: trainer.micro_batch * trainer.grad_accum = 4 "
                                       "(micro_batch x grad_accum: 1 x 4, 2 x 2, 4 x 1)")


def test_other_ranks_wait_for_the_conversion_on_the_file_system_not_in_a_collective(tmp_path):
    """Rank 0 converted while the others waited in a broadcast under deepspeed.timeout_minutes: a 12B
    conversion outlasted it. They now poll for the renamed folder, or for rank 0's note of failure."""
    done = threading.Timer(0.3, lambda: (tmp_path / "universal").mkdir())
    done.start()
    assert universal.wait_for(tmp_path, poll_seconds=0.05) == tmp_path / "universal"
    done.join()
    failed = tmp_path / "other"
    failed.mkdir()
    (failed / universal.FAILED).write_text("DeepSpeed's ds_to_universal failed on x:\nTraceback ...")
    with pytest.raises(CheckpointError, match=f"rank 0 could not convert {failed} to a universal checkpoint: "
                                              "DeepSpeed's ds_to_universal failed on x: \\("):
        universal.wait_for(failed, poll_seconds=0.01)
    with pytest.raises(CheckpointError, match="rank 0 has not converted .* in 1e-06 h: .* did rank 0 die"):
        universal.wait_for(tmp_path / "never", hours=1e-6, poll_seconds=0.001)


def test_a_failed_conversion_leaves_a_note_for_the_waiting_ranks(tmp_path, monkeypatch):
    def broken(path, target):
        raise RuntimeError("disk full\nmore")

    monkeypatch.setattr(universal, "_convert", broken)
    with pytest.raises(RuntimeError):
        universal.convert(tmp_path)
    assert (tmp_path / universal.FAILED).read_text() == "RuntimeError: disk full"


def test_a_conversion_a_stop_signal_ended_is_a_stop_not_a_failure(tmp_path, monkeypatch):
    """A preemption signals the whole Slurm step, the converter too: its death was reported as a failure of the
    checkpoint (universal.failed, exit 2 on every rank, no requeue). Now the waiting ranks learn it was a stop, and
    the run stops before its first update (75); the next run converts again."""
    def killed(path, target):
        raise universal.CheckpointError("DeepSpeed's ds_to_universal failed: killed by SIGTERM")

    monkeypatch.setattr(universal, "_convert", killed)
    assert universal.convert(tmp_path, stopped=lambda: True) is None
    assert not (tmp_path / universal.FAILED).exists()
    assert universal.wait_for(tmp_path, hours=1e-3, poll_seconds=0.001) is None
    with pytest.raises(universal.CheckpointError):  # with no stop signal it is a failure, as before
        universal.convert(tmp_path, stopped=lambda: False)
    universal.clear_stale(tmp_path, owned=True)
    assert list(tmp_path.iterdir()) == []


def test_stale_conversions_are_cleared_before_converting(tmp_path):
    """A conversion killed before its rename left `universal.tmp-<host>-<pid>` (221 GB at 12B) for good. On
    storage shared by nodes, another host's temporary may be a live conversion whose pid is free here."""
    host = socket.gethostname()
    dead = subprocess_pid_that_exited()
    start = int(owner_tag().rpartition(".")[2])
    names = [f"universal.tmp-{host}-{dead}", f"universal.tmp-{host}-{os.getpid()}.{start - 1}",  # a restarted container
             f"universal.tmp-{host}-{os.getpid()}", f"universal.tmp-{owner_tag()}", f"universal.tmp-other-{dead}"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / universal.FAILED).write_text("old")
    universal.clear_stale(tmp_path, owned=False)  # another run might convert it: only this host's ended writers' go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
    universal.clear_stale(tmp_path, owned=True)  # under this run's lock no one else converts it
    assert list(tmp_path.iterdir()) == []


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
