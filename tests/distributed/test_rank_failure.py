"""How a rank's failure ends a multi-rank job. A rank that crashes alone ends within seconds, so that its launcher can
end the others: at exit it met them in a barrier that never matched their pending all-reduce, and the whole job hung
for `deepspeed.timeout_minutes` (30 by default) with every GPU idle, a killed loader worker's traceback the only line
in the log. A failure the ranks learn together still meets without a bound, so rank 0's end work is not cut short."""
import os
import signal
import time

import pytest

import dist_launch as launch
from megadalle.train.distributed import FAILED_MEETING_S


@pytest.fixture
def spawned():
    """`launch.spawn`, its ranks killed after the test: a regression leaves them waiting for the run's 5 minutes."""
    ranks = []
    yield lambda *args, **kwargs: ranks.extend(launch.spawn(*args, **kwargs)) or ranks
    for rank in ranks:
        if rank.poll() is None:
            rank.kill()


def crashed(tmp_path, spawned):
    """Rank 1 crashing alone, rank 0 waiting for it in an all-reduce; returns the ranks once rank 1 said it fails."""
    ranks = spawned(2, {"fails": "crash"}, tmp_path, script="dist_rank_failure_worker.py")
    log, deadline = tmp_path / "rank1.log", time.monotonic() + 120
    while not log.is_file() or "failing now" not in log.read_text():
        assert time.monotonic() < deadline and ranks[1].poll() is None, log.read_text() if log.is_file() else ""
        time.sleep(0.1)
    return ranks


@pytest.mark.distributed
def test_a_rank_that_crashes_alone_exits_within_seconds_with_its_traceback_labelled(tmp_path, spawned):
    rank0, rank1 = crashed(tmp_path, spawned)
    began = time.monotonic()
    assert rank1.wait(timeout=FAILED_MEETING_S + 50) == 1  # the run's timeout is 5 minutes
    assert time.monotonic() - began < FAILED_MEETING_S + 50
    assert "[rank1]: RuntimeError: DataLoader worker (pid 1) is killed" in (tmp_path / "rank1.log").read_text()
    assert rank0.wait(timeout=60) != 0, "rank 0 waited on a rank that is gone, and finished"


@pytest.mark.distributed
def test_a_ctrl_c_while_a_crashed_rank_waits_to_leave_keeps_its_status(tmp_path, spawned):
    """torchrun passes a Ctrl-C to every rank; at a rank already leaving it ended in a KeyboardInterrupt traceback,
    status 130, through the interpreter's finalization that the exit path exists to skip."""
    rank0, rank1 = crashed(tmp_path, spawned)
    time.sleep(2)  # into its meeting
    os.kill(rank1.pid, signal.SIGINT)
    assert rank1.wait(timeout=FAILED_MEETING_S + 50) == 1
    assert "KeyboardInterrupt" not in (tmp_path / "rank1.log").read_text()
    rank0.wait(timeout=60)


@pytest.mark.distributed
def test_a_failure_every_rank_learned_together_waits_for_rank_0s_end_work(tmp_path, spawned):
    done = tmp_path / "rank0_done"
    opts = {"fails": "together", "rank0_s": FAILED_MEETING_S + 5, "done": str(done)}
    rank0, rank1 = spawned(2, opts, tmp_path, script="dist_rank_failure_worker.py")
    assert rank1.wait(timeout=120) == 2
    assert done.is_file(), "rank 1 left before rank 0 had finished its end work"
    assert rank0.wait(timeout=60) == 2
    for rank in (0, 1):
        assert f"rank {rank}: a failure every rank learned together" in (tmp_path / f"rank{rank}.log").read_text()
