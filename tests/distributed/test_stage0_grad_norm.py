"""At ZeRO stage 0 (fp32) DeepSpeed computes the gradient norm only to clip and keeps it nowhere: grad_norm was
missing from the metrics and the console, though clipping ran (engine.keep_stage0_grad_norm)."""
import json

import pytest

from megadalle.cli import main


def grad_norms(run_dir, *overrides):
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.log_every=1",
                 "logger=none", f"run_dir={run_dir}", *overrides]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["grad_norm"] for row in rows if "loss" in row]


@pytest.mark.distributed
def test_stage_0_reports_the_norm_zero_1_reports_with_and_without_clipping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    """trainer=tiny clips at 4, above these norms: both paths leave the same updates as ZeRO-1."""
    zero1 = grad_norms(tmp_path / "zero1", "deepspeed=zero1")
    for name, overrides in (("clipping", []), ("no clipping", ["trainer.grad_clip=0"])):
        assert grad_norms(tmp_path / name, "deepspeed.zero_stage=0", *overrides) == pytest.approx(zero1, rel=1e-6), name
