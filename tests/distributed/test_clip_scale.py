"""CLIP's logit scale is clamped after each update in every copy DeepSpeed keeps of it (ClipTask.after_update,
ParamEditor.clamp): the weights (ZeRO-3's partition, and the whole where DeepSpeed keeps the parameter gathered)
and the bf16 runs' fp32 master (stage 0's whole one, ZeRO-1/2's fragments, ZeRO-3's partitions), which the next
step starts from. A clamp of the weights alone would let the next update write the master's unclamped value back.

Random pairs prefer a lower scale; from the cap (temperature 0.01), one update of about twice the gradient (AdamW's
first step with lr = 2 eps) takes the parameter from ln 100 to about -1.1, below the range's 0.
"""
import pytest
import torch

import dist_launch as launch
from dist_clip_settings import OVERRIDES, PARTITIONED

LOW = [*OVERRIDES, "clip.init_temperature=0.01", "trainer.lr=2e6", "trainer.precision=bf16"]
LAYOUTS = {
    "zero0_bf16": ["deepspeed=zero1", "deepspeed.zero_stage=0", "deepspeed.grad_accum_dtype=bf16"],  # FP16_Unfused
    "zero1_bf16": ["deepspeed=zero1"],  # DeepSpeed's BF16_Optimizer
    "zero2_bf16": ["deepspeed=zero2"],
    "zero3_bf16_partitioned": ["deepspeed=zero3", PARTITIONED],
    "zero3_bf16_gathered": ["deepspeed=zero3"],  # a 1-element parameter: persistent, kept whole on every rank
}


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_logit_scale_is_clamped_in_the_weights_and_the_master(layout, tmp_path):
    launch.run(2, {"overrides": [*LOW, *LAYOUTS[layout]], "out": str(tmp_path), "after_update": True},
               tmp_path / "logs", script="dist_clip_worker.py")
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt")
        assert record["metrics"]["temperature"] == pytest.approx(0.01, rel=0.02)  # the update started at the cap
        assert record["params"]["logit_scale"].item() == 0.0, (layout, rank)
        assert record["master_scale"].item() == 0.0, (layout, rank)
