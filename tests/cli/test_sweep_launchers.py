"""A sweep job's user error under a launcher that runs each job in a process of its own (submitit's)."""
import importlib.util
import os
import subprocess
import sys

import pytest


def test_a_user_error_in_a_submitit_job_is_one_line_and_exit_code_2(tmp_path):
    """The job's SystemExit(2) left submitit no result: a 56-line UncompletedJobError traceback and exit code 1."""
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (scripts/setup.sh slurm)")
    command = [sys.executable, "-m", "megadalle", "plan", "-m", "model=tiny", "gpus=0,1", f"out_dir={tmp_path}",
               "hydra/launcher=submitit_local"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "megadalle plan: gpus=0: must be positive" in done.stderr
    assert "Traceback" not in done.stderr and "UncompletedJobError" not in done.stderr
