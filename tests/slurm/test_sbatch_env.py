"""launch/slurm/train.sbatch's environment for srun, checked without a cluster: the script runs under
bash with the variables Slurm would set and a stand-in `srun` that records what it was given;
`scontrol` is Slurm's own (host names are Slurm's to expand)."""
import subprocess
from pathlib import Path

import pytest

from megadalle.train.distributed import slurm_hostnames

SCRIPT = Path(__file__).parent.parent.parent / "launch" / "slurm" / "train.sbatch"

FAKE_SRUN = """#!/bin/bash
{ echo "ARGS $*"; env; } > "$SRUN_RECORD"
"""


def run_script(slurm_commands, tmp_path, **variables):
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    record = tmp_path / "srun.txt"
    env = dict(slurm_commands, PATH=f"{srun.parent}:{slurm_commands['PATH']}", SRUN_RECORD=str(record),
               SLURM_JOB_ID="1234")
    for name in ("SRUN_CPUS_PER_TASK", "SLURM_CPUS_PER_TASK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "NCCL_DEBUG"):
        env.pop(name, None)
    env.update(variables)
    proc = subprocess.run(["bash", str(SCRIPT), "model=tiny"], env=env, capture_output=True, text=True, timeout=60)
    lines = record.read_text().splitlines() if record.exists() else []
    seen = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("ARGS "))
    args = next((line.removeprefix("ARGS ") for line in lines if line.startswith("ARGS ")), None)
    return proc, seen, args


@pytest.mark.slurm
def test_srun_gets_the_allocations_cpus_and_the_first_host_as_rendezvous(slurm_commands, tmp_path):
    proc, seen, args = run_script(slurm_commands, tmp_path, SLURM_CPUS_PER_TASK="6",
                                  SLURM_JOB_NODELIST="rack[1-2]-node[01-02]")
    assert proc.returncode == 0, proc.stderr
    assert seen["SRUN_CPUS_PER_TASK"] == "6" and seen["OMP_NUM_THREADS"] == "6"
    assert seen["MASTER_ADDR"] == "rack1-node01" and seen["MASTER_PORT"] == str(20000 + 1234)
    assert seen["NCCL_DEBUG"] == "WARN" and seen["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert args.endswith("train resume=auto model=tiny")
    assert "rendezvous rack1-node01:21234, 6 CPUs per task" in proc.stdout


@pytest.mark.slurm
def test_a_given_master_addr_is_kept(slurm_commands, tmp_path):
    proc, seen, _ = run_script(slurm_commands, tmp_path, SLURM_JOB_NODELIST="node[1-2]", MASTER_ADDR="10.0.0.7")
    assert proc.returncode == 0, proc.stderr
    assert seen["MASTER_ADDR"] == "10.0.0.7" and seen["SRUN_CPUS_PER_TASK"] == "1"


@pytest.mark.slurm
def test_an_unexpandable_nodelist_stops_before_srun(slurm_commands, tmp_path):
    proc, _, args = run_script(slurm_commands, tmp_path, SLURM_CPUS_PER_TASK="1", SLURM_JOB_NODELIST="")
    assert proc.returncode == 1 and args is None
    assert "cannot expand SLURM_JOB_NODELIST=" in proc.stderr


@pytest.mark.slurm
def test_python_side_expands_nested_ranges_through_scontrol(slurm_commands, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_commands["SLURM_CONF"])
    assert slurm_hostnames("rack[1-2]-node[01-02],login1") == [
        "rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02", "login1"]
