"""bf16 runs accumulate and reduce gradients in fp32 under every layout DeepSpeed 0.19.8 allows.

The JSON is checked in tests/unit/test_ds_config.py; here DeepSpeed must accept it and train:
ZeRO-1 and pipelines get its BF16_Optimizer (fp32 gradient buffers), ZeRO-2/3 their own optimizers
with fp32 accumulation (engine._do_optimizer_sanity_check picks them).
"""
import pytest

import dist_launch as launch

LAYOUTS = {
    "zero1": ({"zero_stage": 1}, "BF16_Optimizer"),
    "zero2": ({"zero_stage": 2}, "DeepSpeedZeroOptimizer"),
    "zero3": ({"zero_stage": 3}, "DeepSpeedZeroOptimizer_Stage3"),
    "pipe2": ({"zero_stage": 1, "pipeline_stages": 2}, "BF16_Optimizer"),
}


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bf16_trains_with_fp32_accumulation(layout, tmp_path):
    opts, optimizer = LAYOUTS[layout]
    run_dir = tmp_path / "run"
    launch.run(2, {"run_dir": str(run_dir), "precision": "bf16", "steps": 2, "grad_accum": 2,
                   "record_optimizer": True, **opts}, tmp_path / "logs")
    losses = launch.losses(run_dir)
    assert sorted(losses) == [0, 1] and all(3.0 < loss < 6.0 for loss in losses.values()), losses
    assert {(run_dir / f"optimizer_rank{r}.txt").read_text() for r in range(2)} == {optimizer}
