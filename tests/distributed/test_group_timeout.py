"""`deepspeed.timeout_minutes` bounds the collectives of DeepSpeed's own groups too: they got torch's default (30
minutes on gloo), and a rank waiting on a stopped peer in ZeRO's reduction hung past the run's timeout."""
import json

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_a_collective_of_deepspeeds_data_parallel_group_times_out_after_the_runs_timeout(tmp_path):
    procs = launch.spawn(2, {"timeout_s": 3, "sleep_s": 10}, tmp_path, script="dist_timeout_worker.py")
    launch.wait(procs, tmp_path, timeout=60)
    log = (tmp_path / "rank0.log").read_text()
    result = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert result["ended"] != "no error" and result["waited_s"] < 7, log[-2000:]
