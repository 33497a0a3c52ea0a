"""A full disk on rank 0 at wandb's start: rank 0 raised before the broadcast the others waited in, then waited in
the every-rank stop itself, and both ranks hung until the group's timeout."""
import json

import pytest

import dist_launch as launch


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_every_rank_stops_with_rank_0s_line_when_its_disk_refuses_the_wandb_id_record(tmp_path, mode):
    """logger=none keeps the id too, without the broadcast: rank 0 alone fails its start, and the loop's stop shares
    its line."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    procs = launch.spawn(2, {"timeout_s": 20, "run_dir": str(run_dir), "mode": mode}, tmp_path / "logs",
                         script="dist_wandb_disk_worker.py")
    launch.wait(procs, tmp_path / "logs", timeout=90)
    results = [json.loads(next(line for line in (tmp_path / "logs" / f"rank{rank}.log").read_text().splitlines()
                                if line.startswith("{"))) for rank in range(2)]
    line = f"cannot write {run_dir / 'wandb_id.json'} (No space left on device)"
    assert line in results[0]["failure"], results
    assert results[0]["stopped"] == results[1]["stopped"] == f"rank 0: {results[0]['failure']}", results
