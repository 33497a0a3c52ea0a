"""`export dtype=fp16` of a bf16 run is its fp32 master weights rounded to fp16, in every layout: ZeRO 0-2 and
pipelines cast the bf16 training weights instead (3 of fp16's mantissa bits lost, 1.2e-3 from the masters), ZeRO-3
the masters (4.9e-4), so one run exported two models by its layout."""
import pytest
import torch

from megadalle.cli import main as cli
from megadalle.weights import load_weights

import dist_launch as launch

BF16 = ["data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.micro_batch=2",
        "trainer.warmup_steps=0", "trainer.lr=3e-3", "trainer.precision=bf16", "trainer.ema=null", "data.num_workers=0",
        "logger=none"]


def exports_agree(run, tmp_path):
    """fp16 and fp32 exports of `run`: the fp16 one is the fp32 one (the masters) rounded, tensor for tensor, and not
    the bf16 export cast up."""
    for dtype in ("fp32", "fp16", "bf16"):
        assert cli(["export", f"run={run}", f"output={tmp_path / dtype}", f"dtype={dtype}", "weights_only=true"]) == 0
    fp32, fp16, bf16 = (load_weights(tmp_path / d, kind="transformer")[0] for d in ("fp32", "fp16", "bf16"))
    assert fp32.keys() == fp16.keys() == bf16.keys()
    for name, value in fp32.items():
        assert fp16[name].dtype == torch.float16 and torch.equal(fp16[name], value.half()), name
    assert any(not torch.equal(fp16[name], bf16[name].half()) for name in fp32), "the masters hold nothing finer"


@pytest.mark.parametrize("layout", [["deepspeed.zero_stage=1"], ["deepspeed.zero_stage=0",
                                                                  "deepspeed.grad_accum_dtype=bf16"]],
                         ids=["zero1", "zero0"])
def test_fp16_export_of_a_bf16_run_rounds_its_masters(layout, tmp_path):
    run = tmp_path / "run"
    assert cli(["train", *BF16, *layout, f"run_dir={run}"]) == 0
    exports_agree(run, tmp_path)


@pytest.mark.distributed
def test_fp16_export_of_a_bf16_pipeline_rounds_its_masters(tmp_path):
    run = tmp_path / "run"
    launch.run(2, {"overrides": [*BF16, "deepspeed=pipe", f"run_dir={run}"], "probe": str(tmp_path / "probe.pt")},
               tmp_path / "logs", script="dist_train_worker.py", timeout=600)
    exports_agree(run, tmp_path)
