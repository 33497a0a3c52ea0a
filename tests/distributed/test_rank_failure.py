"""A rank that fails alone ends within seconds, so that its launcher can end the others: at exit it met them in a
barrier that never matched their pending all-reduce, and the whole job hung for `deepspeed.timeout_minutes` (30
by default) with every GPU idle, a killed loader worker's traceback the only line in the log."""
import time

import pytest

import dist_launch as launch
from megadalle.train.distributed import FAILED_MEETING_S


@pytest.mark.distributed
@pytest.mark.parametrize("fails, status, said", [("error", 1, "RuntimeError: DataLoader worker (pid 1) is killed"),
                                                 ("user", 2, "rank 1: a setting this rank alone refuses")])
def test_a_rank_that_fails_alone_exits_within_seconds(tmp_path, fails, status, said):
    began = time.monotonic()
    rank0, rank1 = launch.spawn(2, {"fails": fails}, tmp_path, script="dist_rank_failure_worker.py")
    assert rank1.wait(timeout=FAILED_MEETING_S + 50) == status  # the run's timeout is 5 minutes
    assert time.monotonic() - began < FAILED_MEETING_S + 50
    assert said in (tmp_path / "rank1.log").read_text()
    assert rank0.wait(timeout=60) != 0, "rank 0 waited on a rank that is gone, and finished"
