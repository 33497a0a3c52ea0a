"""The sharded EMA (train/ema.py): each rank averages only its piece, and the pieces make the full EMA.

Decay 0.5 over two updates, warmed up to 0.1 and 2/11 (ema.warmed_decay), gives
EMA = 2/11 * (0.1 * initial + 0.9 * w1) + 9/11 * w2, checked exactly against
the weights of the same run's checkpoints 1 and 2 (the consolidation is right, for every layout), and
against the EMA of a single process training the same global batches (the layouts agree). Each
data-parallel rank's EMA file holds half of the elements; each pipeline stage only its own parameters
(named through `PipelineSpec.layer_names`, as a pipeline built from LayerSpecs must).
"""
import shutil

import pytest
import torch
from safetensors import safe_open

from megadalle.train.consolidate import load_run
from megadalle.train import rng

import dist_launch as launch
from dist_toy import ToyTask

BASE = {"steps": 2, "checkpoint_every": 1, "ema": 0.5, "dropout": False}
ZERO3_PARTITION_ALL = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
LAYOUTS = {
    "zero1": {"zero_stage": 1, "grad_accum": 2},
    "zero2": {"zero_stage": 2, "grad_accum": 2},
    "zero3": {"zero_stage": 3, "grad_accum": 2, "ds_extra": ZERO3_PARTITION_ALL},
    "pipe": {"zero_stage": 1, "pipeline_stages": 2, "grad_accum": 4},
}


def weights(run_dir, step, ema=False):
    model, _ = load_run(run_dir, run_dir / "checkpoints" / f"step_{step:08d}", ema=ema)
    return model.state_dict()


def ema_file(checkpoint, rank):
    """(tensors, metadata) of one rank's EMA file (the bytes may differ: safetensors orders metadata freely)."""
    with safe_open(str(checkpoint / f"ema_rank{rank:05d}.safetensors"), "pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()


def piece_sizes(path):
    """name -> elements stored, for one rank's EMA file."""
    with safe_open(str(path), "pt") as f:
        return {name: f.get_slice(name).get_shape()[0] for name in f.keys()}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    launch.run(1, {**BASE, "run_dir": str(root / "run"), "grad_accum": 4}, root / "logs")
    return weights(root / "run", 2, ema=True)


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_ema_equals_full_ema(layout, single, tmp_path):
    run_dir = tmp_path / "run"
    launch.run(2, {**BASE, **LAYOUTS[layout], "run_dir": str(run_dir)}, tmp_path / "logs")
    averaged, w1, w2 = weights(run_dir, 2, ema=True), weights(run_dir, 1), weights(run_dir, 2)
    rng.seed_all(0)  # the trainer seeds the root seed before building the model
    initial = ToyTask().build_model().state_dict()
    for name, value in initial.items():
        assert not torch.equal(w2[name], value), name
        expected = 2 / 11 * (0.1 * value + 0.9 * w1[name]) + 9 / 11 * w2[name]
        torch.testing.assert_close(averaged[name], expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(averaged[name], single[name], rtol=1e-5, atol=1e-6)

    ranks = [piece_sizes(run_dir / "checkpoints" / "step_00000002" / f"ema_rank0000{r}.safetensors") for r in (0, 1)]
    total = sum(v.numel() for v in initial.values())
    if layout == "pipe":  # each stage averages its own parameters, whole
        assert set(ranks[0]).isdisjoint(ranks[1]) and set(ranks[0]) | set(ranks[1]) == set(initial)
        assert all(ranks[r][name] == initial[name].numel() for r in (0, 1) for name in ranks[r])
    else:  # every parameter split in two (ZeRO-3's partition: ceil(n/2) elements on rank 0)
        for name, value in initial.items():
            assert ranks[0][name] == -(-value.numel() // 2) and ranks[0][name] + ranks[1].get(name, 0) == value.numel()
        assert all(abs(sum(r.values()) - total / 2) <= len(initial) for r in ranks)


@pytest.mark.distributed
def test_resume_restores_sharded_ema_bit_exact(tmp_path):
    """Stop after update 2 of 3 and resume: the EMA saved at update 3 is bit for bit the uninterrupted one
    (ZeRO-3, every parameter partitioned, dropout on)."""
    run_dir = tmp_path / "run"
    opts = {**BASE, **LAYOUTS["zero3"], "steps": 3, "dropout": True, "keep_checkpoints": 0, "run_dir": str(run_dir)}
    launch.run(2, opts, tmp_path / "logs")
    ckpts = run_dir / "checkpoints"
    uninterrupted = {r: ema_file(ckpts / "step_00000003", r) for r in (0, 1)}
    shutil.rmtree(ckpts / "step_00000003")
    (ckpts / "latest").write_text("step_00000002")

    launch.run(2, opts, tmp_path / "resume_logs")
    assert "resumed from" in (tmp_path / "resume_logs" / "rank0.log").read_text()
    for r in (0, 1):
        tensors, metadata = ema_file(ckpts / "step_00000003", r)
        assert metadata == uninterrupted[r][1] and tensors.keys() == uninterrupted[r][0].keys()
        assert all(torch.equal(tensors[name], uninterrupted[r][0][name]) for name in tensors)
