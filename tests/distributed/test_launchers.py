"""`megadalle train` under the deepspeed launcher (launch/train.sh, --no_local_rank) and torchrun: 2 ranks.

Ranks come from the environment only, so hydra never sees a --local_rank argument, and both
ranks write into the one run directory rank 0 chose.
"""
import json
import shutil
import signal
import subprocess

import pytest

from megadalle.train.checkpoint import damage
from megadalle.train.distributed import free_port
from tests.launch_signals import stop_after_two_steps

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
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGUSR1, False), (signal.SIGINT, True)],
                         ids=["TERM", "USR1", "ctrl-c"])
def test_a_signal_to_train_sh_checkpoints_and_stops_every_rank(sig, group, train_overrides, tmp_path):
    """DeepSpeed's single-node runner forwards no signal: killed, it left both ranks training as orphans. The
    signal goes to the ranks, not to DeepSpeed's launcher, which would SIGKILL them 30 s into their checkpoint."""
    run_dir = tmp_path / "run"
    cmd, extra_env = LAUNCHERS["deepspeed"](free_port())
    cmd = cmd + [*train_overrides, "trainer.grad_accum=1", "trainer.steps=100000", "trainer.checkpoint_every=0",
                 f"run_dir={run_dir}"]
    stop_after_two_steps(cmd, {**launch.base_env(), **extra_env}, launch.ROOT, run_dir, sig, group)


def test_train_sh_refuses_a_master_port_among_the_launcher_args():
    """Its signal forwarding finds this run's launchers by MASTER_PORT; a --master_port in DS_LAUNCHER_ARGS (which
    DeepSpeed would take) left every signal unforwarded."""
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env={**launch.base_env(), "DS_LAUNCHER_ARGS": "--no_ssh_check --master_port 1234"})
    assert done.returncode == 2 and "MASTER_PORT=N, not --master_port" in done.stderr


@pytest.mark.parametrize("ignored, warned", [(None, False), (signal.SIGTERM, True), (signal.SIGUSR1, True)])
def test_train_sh_says_when_it_cannot_forward_a_signal_its_caller_ignores(ignored, warned, tmp_path):
    """bash cannot trap a signal ignored when it starts: such a TERM or USR1 silently never reached the ranks (a
    parent that had stopped a run in-process left TERM ignored for every script it started, and CI hung)."""
    fake = tmp_path / "bin" / "deepspeed"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {**launch.base_env(), "PATH": f"{fake.parent}:{launch.base_env()['PATH']}"}
    done = subprocess.run([str(launch.ROOT / "launch" / "train.sh"), "model=tiny"], capture_output=True, text=True,
                          env=env, timeout=60, preexec_fn=ignored and (lambda: signal.signal(ignored, signal.SIG_IGN)))
    assert done.returncode == 0, done.stderr
    assert ("cannot pass it on" in done.stderr) == warned, done.stderr
    assert ignored is None or f"SIG{ignored.name[3:]} was ignored" in done.stderr
