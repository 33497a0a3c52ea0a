"""bf16 at ZeRO stage 0 trains like every other layout.

DeepSpeed 0.19.8 runs bf16 at stage 0 (with bf16 accumulation, the only kind it allows there) through its
FP16_UnfusedOptimizer, whose constructor takes one real optimizer step with zero gradients: Adam's step
count ran one ahead and the first update was 0.74x its size (megadalle.train.engine.undo_warmup_step).
Its fp32 masters are saved by position inside the model-states file; the fp32 export names them.
"""
import json

import pytest
import torch

from megadalle.train.consolidate import export
from megadalle.weights import load_weights

import dist_launch as launch

RUN = {"precision": "bf16", "grad_accum_dtype": "bf16", "steps": 3, "grad_accum": 2, "dropout": False,
       "record_optimizer": True, "checkpoint_every": 3}


@pytest.mark.distributed
def test_stage0_bf16_takes_the_updates_zero1_takes(tmp_path):
    runs = {}
    for stage in (0, 1):
        run_dir = tmp_path / f"zero{stage}"
        launch.run(2, {"run_dir": str(run_dir), "zero_stage": stage, **RUN}, tmp_path / f"logs{stage}")
        runs[stage] = run_dir
    assert (runs[0] / "optimizer_rank0.txt").read_text() == "FP16_UnfusedOptimizer"
    for run_dir in runs.values():  # one Adam step per update, counted from the first real one
        assert all(json.loads((run_dir / f"adam_steps_rank{r}.json").read_text()) == [3] for r in range(2))
    stage0, zero1 = launch.losses(runs[0]), launch.losses(runs[1])
    assert sorted(stage0) == sorted(zero1) == [0, 1, 2]
    for step in (1, 2):  # the same updates, up to bf16's rounding of differently ordered sums
        assert stage0[step] == pytest.approx(zero1[step], abs=2e-3), (stage0, zero1)

    # its fp32 masters sit in the model-states file by position: the fp32 export names and reads them
    fp32, _ = load_weights(export(runs[0], tmp_path / "fp32", dtype="fp32"))
    bf16, _ = load_weights(export(runs[0], tmp_path / "bf16"))
    assert fp32.keys() == bf16.keys()
    assert all(fp32[k].dtype == torch.float32 and torch.equal(fp32[k].to(torch.bfloat16), bf16[k]) for k in fp32)
    assert any(not torch.equal(fp32[k], bf16[k].float()) for k in fp32), "the fp32 export is the bf16 weights"
