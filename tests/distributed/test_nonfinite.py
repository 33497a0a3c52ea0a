"""A NaN loss is skipped (ZeRO's overflow check: weights and schedule untouched), counted, logged, and training goes on."""
import json

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_nan_update_is_skipped_and_counted(tmp_path):
    launch.run(1, {"run_dir": str(tmp_path / "run"), "zero_stage": 2, "steps": 5, "nan_step": 2, "dropout": False},
               tmp_path / "logs")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1]
    assert [r["nonfinite_losses"] for r in records] == [0, 0, 1, 1, 1]
    assert all(r["loss"] == r["loss"] for i, r in enumerate(records) if i != 2)  # finite after the skip
    assert records[3]["lr"] == records[2]["lr"], "the schedule must not advance on a skipped update"
    assert records[4]["loss"] < records[0]["loss"]
