"""EMA of the weights: saved with each checkpoint and exported with `ema=true` (decay 0.5, one update:
EMA = 0.5 * initial + 0.5 * trained, checked against an independent rebuild of the initial weights)."""
import pytest
import torch

from megadalle.export import export
from megadalle.train import rng
from megadalle.weights import load_weights

import dist_launch as launch
from dist_toy import ToyTask


@pytest.mark.distributed
def test_ema_export(tmp_path):
    run_dir = tmp_path / "run"
    launch.run(1, {"run_dir": str(run_dir), "zero_stage": 1, "steps": 1, "ema": 0.5, "dropout": False},
               tmp_path / "logs")
    assert (run_dir / "checkpoints" / "step_00000001" / "ema_rank00000.safetensors").is_file()
    trained, _ = load_weights(export(run_dir, tmp_path / "w.safetensors"), kind="toy")
    averaged, _ = load_weights(export(run_dir, tmp_path / "ema.safetensors", ema=True), kind="toy")
    rng.seed_all(0)  # the trainer seeds the root seed before building the model
    initial = ToyTask().build_model().state_dict()
    for name, value in initial.items():
        assert not torch.equal(trained[name], value), name
        torch.testing.assert_close(averaged[name], 0.5 * value + 0.5 * trained[name], rtol=1e-6, atol=1e-7)
