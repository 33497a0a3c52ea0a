"""`megadalle train` under the deepspeed launcher (launch/train.sh, --no_local_rank) and torchrun: 2 ranks.

Ranks come from the environment only, so hydra never sees a --local_rank argument, and both
ranks write into the one run directory rank 0 chose.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from megadalle.train.checkpoint import damage
from megadalle.train.distributed import free_port

import dist_launch as launch


def check_run(run_dir):
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000003"
    assert damage(run_dir / "checkpoints" / "step_00000003") is None
    assert {p.name for p in (run_dir / "checkpoints" / "step_00000003").glob("rng_rank*")} == \
        {"rng_rank00000.pt", "rng_rank00001.pt"}


LAUNCHERS = {
    "deepspeed": lambda port: ([str(launch.ROOT / "launch" / "train.sh")], {"NUM_GPUS": "2", "MASTER_PORT": str(port)}),
    "torchrun": lambda port: (["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "-m", "megadalle",
                               "train"], {}),
}


@pytest.mark.distributed
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_trains(launcher, train_overrides, tmp_path):
    assert shutil.which(launcher), f"{launcher} is not installed"
    run_dir = tmp_path / "run"
    cmd, extra_env = LAUNCHERS[launcher](free_port())
    cmd = cmd + [*train_overrides, "trainer.grad_accum=1", f"run_dir={run_dir}"]
    done = subprocess.run(cmd, env={**launch.base_env(), **extra_env}, cwd=launch.ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_run(run_dir)


@pytest.mark.distributed
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_to_train_sh_checkpoints_and_stops_every_rank(sig, train_overrides, tmp_path):
    """DeepSpeed's single-node runner forwards no signal: killed, it left both ranks training as orphans."""
    run_dir = tmp_path / "run"
    cmd, extra_env = LAUNCHERS["deepspeed"](free_port())
    cmd = cmd + [*train_overrides, "trainer.grad_accum=1", "trainer.steps=100000", "trainer.checkpoint_every=0",
                 f"run_dir={run_dir}"]
    proc = subprocess.Popen(cmd, env={**launch.base_env(), **extra_env}, cwd=launch.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not ((run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        proc.send_signal(sig)
        out = proc.communicate(timeout=120)[0]
        time.sleep(1)
        ranks = subprocess.run(["pgrep", "-f", f"run_dir={run_dir}"], capture_output=True, text=True).stdout.split()
    finally:
        try:  # whatever the script left behind (it runs in its own session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not ranks, f"ranks still running after train.sh exited: {ranks}"
    latest = (run_dir / "checkpoints" / "latest").read_text()
    assert damage(run_dir / "checkpoints" / latest) is None, out[-3000:]
