"""Fixtures of the cluster tests: Slurm's commands, a local Slurm cluster, sshd on localhost for the
DeepSpeed launcher's pdsh, and the distributed tests' data.

tests/slurm/cluster.sh and sshd.sh install (root, apt) and start what is missing; where they
cannot (exit status 77), the tests that need them skip with the one-line reason instead of erroring.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "distributed"))

from dist_fixtures import token_data, train_overrides  # noqa: E402,F401

from megadalle.train.distributed import free_port  # noqa: E402

HERE = Path(__file__).parent
CLUSTER = HERE / "cluster.sh"
SSHD = HERE / "sshd.sh"
CANNOT = 77
"""The set-up scripts' exit status for "this machine cannot do it" (the autotools convention for a skip)."""


def setup_script(script: Path, *args, env=None, timeout=600):
    """Run a set-up script; skip the calling test with its reason when it says it cannot run here."""
    proc = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode == CANNOT:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    if proc.returncode:
        raise AssertionError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def slurm_commands(tmp_path_factory):
    """Environment in which Slurm's client commands (scontrol) run without a controller.

    A minimal slurm.conf is enough for the commands that only parse, such as `scontrol show hostnames`.
    """
    setup_script(CLUSTER, "install")
    conf = tmp_path_factory.mktemp("slurm-conf") / "slurm.conf"
    conf.write_text("ClusterName=offline\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=ALL\n")
    return dict(os.environ, SLURM_CONF=str(conf))


def start_cluster(tmp_path_factory, nodes: int = 1):
    """Start a local cluster of `nodes` node daemons; returns (environment for its commands, directory)."""
    cluster = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURMCTLD_PORT=str(free_port()), SLURMD_PORT=str(free_port()), CLUSTER_NODES=str(nodes))
    setup_script(CLUSTER, "start", str(cluster), env=env)
    env["SLURM_CONF"] = str(cluster / "slurm.conf")
    return env, cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Environment for Slurm commands against a fresh one-node local cluster (stopped afterwards)."""
    env, cluster = start_cluster(tmp_path_factory)
    yield env
    subprocess.run([str(CLUSTER), "stop", str(cluster)], env=env, timeout=60)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Directory of a running localhost sshd whose ssh_config makes node-a and node-b two hosts."""
    where = tmp_path_factory.mktemp("sshd")
    setup_script(SSHD, "start", str(where), str(free_port()))
    yield where
    subprocess.run([str(SSHD), "stop", str(where)], timeout=60)
