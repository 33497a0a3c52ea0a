"""A resume must read the data the run stopped in: another global batch (or data set, seed) is refused."""
import subprocess
import sys

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_resume_on_other_data_order_is_refused(train_overrides, tmp_path):
    base = [sys.executable, "-m", "megadalle", "train", *train_overrides, f"run_dir={tmp_path / 'run'}"]
    first = subprocess.run(base, env=launch.base_env(), capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run([*base, "trainer.steps=5", "trainer.grad_accum=1"], env=launch.base_env(),
                           capture_output=True, text=True, timeout=240)
    assert again.returncode != 0
    assert "cannot resume" in again.stderr  # the layout check names what to keep
    assert "keep the global batch: trainer.micro_batch * trainer.grad_accum = 4" in again.stderr
