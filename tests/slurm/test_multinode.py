"""Multi-node launch on one machine, 2 nodes x 2 ranks of the tiny Transformer on CPU, to the end:
- launch/train.sh with a hostfile naming two "nodes" (node-a and node-b, both this machine through a
  localhost sshd): DeepSpeed's pdsh launcher starts 2 ranks on each over ssh;
- launch/slurm/train.sbatch on a local Slurm cluster running two node daemons (slurmd -N node1,
  node2 on this host): srun starts 2 tasks on each node.
"""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import CLUSTER, start_cluster
from slurm_jobs import FINISHED, job_field, logged_steps, wait_until

from megadalle.train.distributed import free_port
from tests.launch_signals import stop_after_two_steps

ROOT = Path(__file__).parent.parent.parent
STEPS = 3


def pdsh_env(sshd, tmp_path) -> dict:
    """train.sh's environment for a hostfile of node-a and node-b (2 slots each), both this machine."""
    (tmp_path / "hostfile").write_text("# two nodes\nnode-a slots=2\n\nnode-b slots=2\n")
    # pdsh's ssh starts each rank in a fresh environment: what it needs comes through DeepSpeed's env file.
    (tmp_path / "ds_env").write_text("DS_ACCELERATOR=cpu\nOMP_NUM_THREADS=1\nWANDB_MODE=offline\n")
    env = dict(os.environ, HOSTFILE=str(tmp_path / "hostfile"), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               DS_LAUNCHER_ARGS="--no_ssh_check", PDSH_SSH_ARGS_APPEND=f"-F {sshd / 'ssh_config'}",
               DS_ENV_FILE=str(tmp_path / "ds_env"), DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return env


@pytest.mark.distributed
def test_train_sh_runs_two_nodes_of_two_ranks_through_pdsh(sshd, train_overrides, tmp_path):
    """The overrides reach every node as typed: pdsh's remote shell expanded the README's `${oc.env:...}` form
    ("bad substitution" on every node) and took quotes and backslashes away."""
    env = pdsh_env(sshd, tmp_path)
    run_dir = tmp_path / "run"
    with (tmp_path / "ds_env").open("a") as ds_env:  # each node's environment
        ds_env.write(f"RUN_AT={run_dir}\n")
    proc = subprocess.run([str(ROOT / "launch" / "train.sh"), *train_overrides, f"trainer.steps={STEPS}",
                           "run_dir=${oc.env:RUN_AT}", """name='two nodes $HOME "a" `b`'"""], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "node-a: " in out and "node-b: " in out  # pdsh prefixes each node's output with its name
    assert {json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()} == set(range(STEPS))
    assert json.loads((run_dir / "run.json").read_text())["config"]["name"] == 'two nodes $HOME "a" `b`'  # rank 0's
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{STEPS:08d}"
    assert len(list((run_dir / "checkpoints" / f"step_{STEPS:08d}").glob("rng_rank*.pt"))) == 4


@pytest.mark.distributed
def test_a_signal_to_train_sh_reaches_the_ranks_of_every_node(sshd, train_overrides, tmp_path):
    """Over pdsh, DeepSpeed's runner never forwarded USR1, and for TERM it killed the launchers, which SIGKILL
    their ranks 30 s into a checkpoint: train.sh now signals every node's ranks itself, through pdsh, with the
    signal it got (`pkill -SIG`; that each signal reaches train.sh's `forward` is checked on one node by
    tests/distributed/test_launchers.py)."""
    env = pdsh_env(sshd, tmp_path)
    run_dir = tmp_path / "run"
    cmd = [str(ROOT / "launch" / "train.sh"), *train_overrides, "trainer.steps=100000", "trainer.checkpoint_every=0",
           f"run_dir={run_dir}"]
    out = stop_after_two_steps(cmd, env, tmp_path, run_dir, signal.SIGTERM)
    assert len(list((run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()).glob(
        "rng_rank*.pt"))) == 4, out[-3000:]


@pytest.fixture(scope="module")
def two_node_slurm(tmp_path_factory):
    env, cluster = start_cluster(tmp_path_factory, nodes=2)
    yield env
    subprocess.run([str(CLUSTER), "stop", str(cluster)], env=env, timeout=60)


@pytest.mark.slurm
@pytest.mark.distributed
def test_sbatch_runs_two_nodes_of_two_tasks_through_srun(two_node_slurm, train_overrides, tmp_path):
    run_dir = tmp_path / "run"
    # node1 and node2 are names Slurm knows, not hosts DNS knows: the rendezvous is given as an address
    # (MEGADALLE_MASTER_ADDR).
    # RANK and WORLD_SIZE are a stale single-rank world in the submitting shell: the script must not pass them on.
    # A MASTER_ADDR/MASTER_PORT in the submitting shell is another rendezvous: the script must replace it.
    env = dict(two_node_slurm, DS_ACCELERATOR="cpu", WANDB_MODE="offline", OMP_NUM_THREADS="1",
               MEGADALLE_MASTER_ADDR="127.0.0.1", MASTER_ADDR="10.255.0.1", MASTER_PORT="1",
               RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    submit = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
              "--time=10", f"--output={tmp_path}/job-%j.out", str(ROOT / "launch" / "slurm" / "train.sbatch"),
              *train_overrides, f"trainer.steps={STEPS}", f"run_dir={run_dir}"]
    job = subprocess.run(submit, env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    wait_until(lambda: job_field(env, job, "JobState") in FINISHED, 600, "the job to end")
    text = (tmp_path / f"job-{job}.out").read_text(errors="replace")
    assert job_field(env, job, "JobState") == "COMPLETED", text[-4000:]
    assert "nodes node[1-2]" in text and "rendezvous 127.0.0.1:" in text
    assert logged_steps(run_dir) == set(range(STEPS))
    assert len(list((run_dir / "checkpoints" / f"step_{STEPS:08d}").glob("rng_rank*.pt"))) == 4
