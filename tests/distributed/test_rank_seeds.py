"""Data-parallel ranks draw different dropout masks.

The trainer seeds each rank's generators apart after building the model (train/loop.py `_resume`): ranks seeded
alike would drop the same units of every sample, which correlates their gradients and wastes the regularisation
of all but one rank; a rank's stream must still follow from the run's seed and its rank, or a run is not
reproducible: test_resume.py pins that part (its dropout losses are bit-identical across runs)."""
import pytest
import torch

import dist_launch as launch

OPTS = {"zero_stage": 1, "steps": 1, "dropout": True}


@pytest.mark.distributed
def test_two_data_parallel_ranks_drop_different_units(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launch.run(2, {**OPTS, "run_dir": str(run_dir)}, tmp_path / "logs", script="dist_rank_seeds_worker.py")
    masks = [torch.load(run_dir / f"dropout_rank{rank}.pt") for rank in range(2)]
    assert masks[0].shape == masks[1].shape and masks[0].any()
    assert not torch.equal(masks[0], masks[1]), "both data-parallel ranks drew the same dropout mask"
