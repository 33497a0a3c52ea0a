"""bf16 runs accumulate and reduce gradients in fp32 under every layout DeepSpeed 0.19.8 allows, and
their fp32 export is the optimizer's fp32 masters.

The JSON is checked in tests/unit/test_ds_config.py; here DeepSpeed must accept it and train:
ZeRO-1 and pipelines get its BF16_Optimizer (fp32 gradient buffers), ZeRO-2/3 their own optimizers
with fp32 accumulation (engine._do_optimizer_sanity_check picks them). ZeRO-3 runs on 3 ranks so that
its partitions end in padding; the pipeline is 2 stages x 2 so that each stage's masters are split.
"""
import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from megadalle.train.checkpoint_choice import find_resumable
from megadalle.train.consolidate import export
from megadalle.train.zero_masters import zero_masters
from megadalle.weights import load_weights

import dist_launch as launch

LAYOUTS = {
    "zero1": (2, {"zero_stage": 1}, "BF16_Optimizer"),
    "zero2": (2, {"zero_stage": 2}, "DeepSpeedZeroOptimizer"),
    "zero3": (3, {"zero_stage": 3}, "DeepSpeedZeroOptimizer_Stage3"),
    "pipe2x2": (4, {"zero_stage": 1, "pipeline_stages": 2}, "BF16_Optimizer"),
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def bf16_run(request, tmp_path_factory):
    world, opts, optimizer = LAYOUTS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    run_dir = tmp / "run"
    launch.run(world, {"run_dir": str(run_dir), "precision": "bf16", "steps": 2, "grad_accum": 2,
                       "record_optimizer": True, **opts}, tmp / "logs")
    return request.param, world, run_dir, optimizer


@pytest.mark.distributed
def test_bf16_trains_with_fp32_accumulation(bf16_run):
    _, world, run_dir, optimizer = bf16_run
    losses = launch.losses(run_dir)
    assert sorted(losses) == [0, 1] and all(3.0 < loss < 6.0 for loss in losses.values()), losses
    assert {(run_dir / f"optimizer_rank{r}.txt").read_text() for r in range(world)} == {optimizer}


@pytest.mark.distributed
def test_fp32_export_of_a_bf16_run_is_its_masters(bf16_run, tmp_path):
    layout, _, run_dir, _ = bf16_run
    fp32, _ = load_weights(export(run_dir, tmp_path / "fp32", dtype="fp32"))
    bf16, _ = load_weights(export(run_dir, tmp_path / "bf16"))
    assert fp32.keys() == bf16.keys()
    assert all(fp32[k].dtype == torch.float32 and torch.equal(fp32[k].to(torch.bfloat16), bf16[k]) for k in fp32)
    assert any(not torch.equal(fp32[k], bf16[k].float()) for k in fp32), "the fp32 export is the bf16 weights"
    if layout in ("zero2", "zero3"):
        checkpoints = run_dir / "checkpoints"
        tag = find_resumable(checkpoints)
        theirs = get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag)
        ours = dict(zero_masters(checkpoints / tag))
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
