"""The logged `mem_gib` is the largest rank's peak, not rank 0's: a pipeline's stages differ most."""
import json

import pytest

import dist_launch as launch

HELD_MIB = 2048


@pytest.mark.distributed
def test_mem_gib_is_the_peak_of_the_rank_that_holds_most(tmp_path):
    """Rank 1 (the last stage) holds 2 GiB through the run; rank 0, which writes metrics.jsonl, holds far less."""
    run_dir = tmp_path / "run"
    launch.run(2, {"run_dir": str(run_dir), "steps": 2, "pipeline_stages": 2, "hold_rank": 1, "hold_mib": HELD_MIB},
               tmp_path / "logs")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    assert all(r["mem_gib"] > HELD_MIB / 1024 for r in records), [r["mem_gib"] for r in records]
