"""`megadalle train data=synthetic` trains from the command line with no data files and no tokenizer."""
import subprocess
import sys

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_train_runs_without_files(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "megadalle", "train", "data=synthetic", "model=tiny", "trainer=tiny",
           "trainer.steps=2", "trainer.micro_batch=2", "trainer.eval_every=1", "logger=none", f"run_dir={run_dir}",
           f"out_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=launch.base_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # validation asked for: none to read
    losses = launch.losses(run_dir)
    assert sorted(losses) == [0, 1]
    assert all(3.0 < loss < 8.0 for loss in losses.values()), losses  # about ln(vocab) on random tokens
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing but the run directory was written"


def test_sample_grids_are_refused_by_name(tmp_path, capsys):
    from megadalle.cli import main

    weights = tmp_path / "dvae.safetensors"
    weights.touch()
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", f"dvae_weights={weights}",
                 "logger=none", f"run_dir={tmp_path / 'run'}"]) == 2
    assert "data=synthetic has none: drop dvae_weights" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
