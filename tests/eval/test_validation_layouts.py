"""Validation is the same on every layout: one process, ZeRO-3 on 2 ranks and a 2-stage pipeline log the same
val/loss (the same weights on the same held-out global batches, averaged over micro-batches and ranks)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
import dist_launch as launch  # noqa: E402

WORKER = str(Path(__file__).with_name("dist_val_worker.py"))
LAYOUTS = {"single": (1, {"zero_stage": 1, "grad_accum": 4}), "zero3": (2, {"zero_stage": 3, "grad_accum": 2}),
           "pipe2": (2, {"zero_stage": 1, "pipeline_stages": 2, "grad_accum": 4})}


def val_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val/loss"] for r in records if "val/loss" in r}


@pytest.mark.distributed
def test_val_loss_is_the_same_on_every_layout(tmp_path):
    got = {}
    for name, (world, opts) in LAYOUTS.items():
        launch.run(world, {"run_dir": str(tmp_path / name), **opts}, tmp_path / f"logs-{name}", script=WORKER)
        got[name] = val_losses(tmp_path / name)
    assert sorted(got["single"]) == [1, 3]
    for name in LAYOUTS:
        assert sorted(got[name]) == [1, 3], name
        for step, loss in got["single"].items():
            assert got[name][step] == pytest.approx(loss, rel=1e-5), (name, got)
    assert got["single"][3] < got["single"][1], "the toy must learn between evaluations, or equality proves little"
