"""When one rank fails while choosing, saving or loading a checkpoint, every rank stops; none goes on alone to wait
in a collective until the timeout (30 minutes by default)."""
import json
import shutil
import subprocess

import pytest

import dist_launch as launch

OPTS = {"zero_stage": 1, "steps": 2, "checkpoint_every": 2, "dropout": True}


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A run that saved its checkpoint at step 2; each test damages a copy of it."""
    root = tmp_path_factory.mktemp("checkpointed")
    launch.run(2, {**OPTS, "run_dir": str(root / "run")}, root / "logs")
    return root / "run"


@pytest.mark.distributed
def test_a_load_that_fails_on_one_rank_stops_them_all(checkpointed, tmp_path):
    run_dir = shutil.copytree(checkpointed, tmp_path / "run")
    with open(run_dir / "checkpoints" / "step_00000002" / "rng_rank00001.pt", "r+b") as f:
        f.write(bytes(64))
    logs = failed_run(2, {**OPTS, "steps": 4, "run_dir": str(run_dir)}, tmp_path / "second")
    for log in logs:
        assert ("CheckpointError: rank 1: cannot load the checkpoint" in log and "step_00000002 (UnpicklingError: "
                "Weights only load failed); if it is damaged, start over in a new run_dir" in log)


@pytest.mark.distributed
def test_a_save_that_fails_on_one_rank_stops_them_all(tmp_path):
    """Rank 1 meets a full disk writing DeepSpeed's optimizer file; rank 0's writes went through."""
    run_dir = tmp_path / "run"
    logs = failed_run(2, {**OPTS, "steps": 4, "run_dir": str(run_dir), "disk_full_rank": 1}, tmp_path / "logs")
    for log in logs:
        assert ("CheckpointError: cannot save the checkpoint" in log and "step_00000002 (rank 1: OSError: [Errno 28] "
                "No space left on device" in log and "no checkpoint of this run was complete before it" in log)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == []


@pytest.mark.distributed
def test_an_unexpected_error_choosing_the_checkpoint_stops_every_rank(checkpointed, tmp_path):
    """A bug on rank 0 while it picks the checkpoint (here a manifest with a layout this version does not know)
    keeps its traceback there, and the other ranks stop with its first line instead of waiting to be told."""
    run_dir = shutil.copytree(checkpointed, tmp_path / "run")
    manifest = run_dir / "checkpoints" / "step_00000002" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "layout": {"unknown": 1}}))
    rank0, rank1 = failed_run(2, {**OPTS, "steps": 4, "run_dir": str(run_dir)}, tmp_path / "second")
    assert "Traceback" in rank0 and "TypeError" in rank0
    assert "CheckpointError: rank 0 failed to choose the checkpoint: TypeError" in rank1


def failed_run(world, opts, log_dir):
    """Run ranks expected to fail, each within two minutes; their logs."""
    procs = launch.spawn(world, opts, log_dir)
    try:
        codes = [p.wait(timeout=120) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("a rank went on while another had failed") from None
    assert all(codes), codes
    return [(log_dir / f"rank{rank}.log").read_text() for rank in range(world)]
