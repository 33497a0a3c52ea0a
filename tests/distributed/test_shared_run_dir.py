"""Every rank must write into the one run directory rank 0 made: a run_dir on node-local storage (the same path, another
folder on each node) ran to the end with exit 0, its manifest listing rank 0's files alone, and the loss showed only
at the resume, as a damaged checkpoint. Rank 1 runs in a mount namespace of its own, where a tmpfs covers a folder:
its node-local disk."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dist_launch as launch


def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not unshare_works(), reason="needs `unshare --mount` to give rank 1 its own disk")]


def train(run_dir: Path, node_local: Path, make_there: str = "") -> tuple[list[int], list[str]]:
    """A 2-rank run of 2 updates into `run_dir`, rank 1 seeing an empty tmpfs over `node_local` (with `make_there`,
    a folder made in it)."""
    cmd = [sys.executable, "-m", "megadalle", "train", "data=synthetic", "model=tiny", "trainer=tiny",
           "trainer.micro_batch=2", "trainer.warmup_steps=0", "trainer.steps=2", "logger=none", f"run_dir={run_dir}"]
    local = f"mount -t tmpfs none {node_local}" + (f" && mkdir {node_local / make_there}" if make_there else "")
    commands = [cmd, ["unshare", "--mount", "--map-root-user", "sh", "-c", f'{local} && exec "$@"', "-", *cmd]]
    port = str(launch.free_port())
    procs = [subprocess.Popen(command, cwd=run_dir.parent.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(launch.base_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for rank, command in enumerate(commands)]
    try:
        codes = [proc.wait(timeout=300) for proc in procs]
        return codes, [proc.stdout.read() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.stdout.close()


def test_a_rank_that_does_not_see_the_run_directory_stops_every_rank_before_training(tmp_path):
    shared = tmp_path / "node_local"
    shared.mkdir()
    run_dir = shared / "run"
    codes, outs = train(run_dir, shared)
    assert codes == [2, 2], "\n".join(out[-2000:] for out in outs)
    for rank, out in enumerate(outs):
        assert (f"megadalle train: rank {rank}: rank 1: run_dir {run_dir} is another folder on host " in out
                and "run_dir (or out_dir, where run_dir is left to its default) must be on a file system every node "
                    "shares" in out), out[-2000:]
        assert "Traceback" not in out and "finished" not in out, out[-2000:]
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"], "the token is removed, nothing is trained"


def test_a_checkpoint_whose_rank_files_rank_0_does_not_see_is_not_published(tmp_path):
    """The run directory is shared, its checkpoints/ a link to node-local storage: rank 1's files land on its node."""
    node_local = tmp_path / "node_local"
    (node_local / "checkpoints").mkdir(parents=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(node_local / "checkpoints")
    codes, outs = train(run_dir, node_local, make_there="checkpoints")
    assert codes == [2, 2], "\n".join(out[-2000:] for out in outs)
    step = run_dir / "checkpoints" / "step_00000002"
    for out in outs:
        assert (f"cannot save the checkpoint {step}: rank 0 does not see the files of rank 1 there "
                "(rng_rank00001.pt is missing)" in out), out[-2000:]
    assert not step.exists() and not (run_dir / "checkpoints" / "latest").exists()
