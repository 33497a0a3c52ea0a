"""hydra-native verbs: `-m` sweeps run every job through the same checks and stage, a training sweep
resumes job by job when rerun, and hydra's submitit launcher submits a verb to a real one-node Slurm."""
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from megadalle.cli import main
from megadalle.hydra_app import flags_first
from megadalle.train.distributed import free_port

CLUSTER = Path(__file__).resolve().parents[1] / "slurm" / "cluster.sh"


@pytest.mark.distributed
def test_sweep_trains_one_run_per_job_and_a_rerun_resumes_them(train_overrides, tmp_path, capsys):
    sweep = ["train", "-m", "trainer.lr=0.001,0.0003", *train_overrides, f"out_dir={tmp_path}"]
    assert main([*sweep, "trainer.steps=1"]) == 0
    runs = [tmp_path / "multirun" / "train" / str(job) for job in (0, 1)]
    for run, lr in zip(runs, (0.001, 0.0003)):
        assert (run / "checkpoints" / "latest").read_text() == "step_00000001"
        assert f'"lr": {lr}' in (run / "run.json").read_text()
    capsys.readouterr()
    assert main([*sweep, "trainer.steps=2"]) == 0
    out = capsys.readouterr().out
    for run in runs:
        assert f"resumed from {run.resolve()}/checkpoints/step_00000001 at step 1" in out
        assert (run / "checkpoints" / "latest").read_text() == "step_00000002"


def test_sweep_jobs_get_the_plain_runs_checks(train_overrides, tmp_path, capsys):
    shards = next(o for o in train_overrides if o.startswith("data.shards="))
    assert main(["train", "-m", "trainer.lr=0.001,0.0003", shards, f"out_dir={tmp_path}"]) == 2
    assert "megadalle train: required key not set: data.tokenizer" in capsys.readouterr().err
    assert main(["plan", "-m", "model=tiny,huge"]) == 2
    assert "model=huge: no such model config; choose one of 12b, 1b, small, tiny" in capsys.readouterr().err


def test_overrides_may_come_before_and_after_hydras_flags(tmp_path, capsys):
    assert flags_first(["a=1", "-m", "b=2", "--cfg", "job", "~c"]) == ["-m", "--cfg", "job", "a=1", "b=2", "~c"]
    assert main(["plan", "gpus=1", "-m", "model=tiny", "gpu_mem_gb=8", f"out_dir={tmp_path}"]) == 0
    assert "7.2 GB (8 GB less 10% headroom)" in capsys.readouterr().out  # gpu_mem_gb=8 reached plan
    overrides = (tmp_path / "multirun" / "plan" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "gpus=1" in overrides and "gpu_mem_gb=8" in overrides


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Environment for Slurm commands against a fresh local cluster (tests/slurm/cluster.sh), stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (it installs and starts slurmctld, slurmd, munged)")
    cluster = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURMCTLD_PORT=str(free_port()), SLURMD_PORT=str(free_port()))
    started = subprocess.run([str(CLUSTER), "start", str(cluster)], env=env, capture_output=True, text=True,
                             timeout=600)
    if started.returncode != 0:
        subprocess.run([str(CLUSTER), "stop", str(cluster)], env=env, timeout=60)
        pytest.skip(f"could not start a local Slurm cluster: {started.stderr.strip().splitlines()[-1:]}")
    env["SLURM_CONF"] = str(cluster / "slurm.conf")
    yield env
    subprocess.run([str(CLUSTER), "stop", str(cluster)], env=env, timeout=60)


@pytest.mark.slurm
def test_submitit_launcher_submits_each_job_to_slurm(slurm, tmp_path):
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (scripts/setup.sh slurm)")
    command = [sys.executable, "-m", "megadalle", "plan", "-m", "model=tiny,small", "gpus=1", "gpu_mem_gb=8",
               f"out_dir={tmp_path}", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=test",
               "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
    done = subprocess.run(command, env=dict(slurm, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "multirun" / "plan" / ".submitit"
    results = sorted(folder.glob("*/*_result.pkl"))
    assert len(results) == 2, sorted(p.name for p in folder.iterdir())
    logs = {}
    for result in results:
        status, job = pickle.loads(result.read_bytes())
        assert status == "success" and job.return_value == 0
        logs[job.overrides[0]] = result.with_name(result.name.replace("_result.pkl", "_log.out")).read_text()
    assert "layers: 4," in logs["model=tiny"] and "layers: 12," in logs["model=small"]
    assert all("suggested layout" in log for log in logs.values())
