"""hydra's submitit launcher submits each job of a `-m` sweep to the real one-node Slurm (conftest's `slurm`)."""
import importlib.util
import pickle
import subprocess
import sys

import pytest


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
