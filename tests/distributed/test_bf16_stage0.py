"""bf16 at ZeRO stage 0 trains like every other layout.

DeepSpeed 0.19.8 runs bf16 at stage 0 (with bf16 accumulation, the only kind it allows there) through its
FP16_UnfusedOptimizer, whose constructor takes one real optimizer step with zero gradients: Adam's step
count ran one ahead and the first update was 0.74x its size (megadalle.train.engine.undo_warmup_step).
"""
import json

import pytest

from megadalle.train.checkpoint import CheckpointError
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

    # its fp32 masters sit where export cannot name them: an fp32 export is refused, not widened from bf16
    with pytest.raises(CheckpointError, match="export dtype=bf16"):
        export(runs[0], tmp_path / "fp32", dtype="fp32")
    weights, _ = load_weights(export(runs[0], tmp_path / "bf16"))
    assert weights and all(str(t.dtype) == "torch.bfloat16" for t in weights.values() if t.is_floating_point())
