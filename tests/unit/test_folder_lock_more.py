"""folder_lock: which job a split encode's process belongs to, and a stale record of an ended job (the module
docstring of megadalle/folder_lock.py says why each matters)."""
import fcntl
import os

import pytest

from megadalle import folder_lock
from megadalle.folder_lock import LOCK, OutputInUse, job_of, output_lock


def test_the_slurm_job_names_the_job_before_torchrun_then_the_rendezvous():
    """torchrun started by srun on each node of one Slurm job: the nodes' run ids may differ (each its own
    default), the Slurm job is one; taking the run id first would refuse the job's other nodes as another job."""
    both = {"SLURM_JOB_ID": "5", "TORCHELASTIC_RUN_ID": "r1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert job_of(both) == "5"
    assert job_of({"TORCHELASTIC_RUN_ID": "r1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}) == "r1"
    assert job_of({"SLURM_JOB_ID": "", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}) == "n1:29500"
    assert job_of({}) == ""


def test_a_record_of_a_job_that_ended_while_it_looked_is_taken_over(tmp_path, monkeypatch):
    """The holders of another job were there at its first try and gone by the time it read their record: that
    record is stale, so one more try takes the lock and writes this job's record, instead of refusing a free
    folder."""
    (tmp_path / LOCK).write_text("an encode (host elsewhere, pid 1, Slurm job 9)\njob 9")
    real_take, tries = folder_lock._take, []

    def held_at_first(fd, record):
        tries.append(record)
        return len(tries) > 1 and real_take(fd, record)

    monkeypatch.setattr(folder_lock, "_take", held_at_first)
    with output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True):
        assert (tmp_path / LOCK).read_text().endswith("\njob 5")
    assert len(tries) == 2


def test_a_taker_that_read_another_jobs_record_holds_nothing_while_it_looks_again(tmp_path, monkeypatch):
    """It has no right to the folder yet: keeping the shared hold it read the record under would, in that moment,
    refuse a process that may take the folder alone (the stale job is gone)."""
    (tmp_path / LOCK).write_text("an encode (host elsewhere, pid 1, Slurm job 9)\njob 9")
    real_take, free_then = folder_lock._take, []

    def held_at_first(fd, record):
        if not free_then:  # its first try: another job's holders are there, so it reads their record
            free_then.append(None)
            return False
        probe = os.open(tmp_path / LOCK, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free_then.append(True)
        except BlockingIOError:
            free_then.append(False)
        finally:
            os.close(probe)
        return real_take(fd, record)

    monkeypatch.setattr(folder_lock, "_take", held_at_first)
    output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True).release()
    assert free_then == [None, True]


def test_another_job_still_holding_it_is_refused_after_one_more_look(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_lock, "SHARED_WAIT_S", 0.1)
    with output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "9"}, shared=True):
        with pytest.raises(OutputInUse, match=r"Slurm job 9\); wait"):
            output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True)
    with output_lock(tmp_path, "encode"):  # the refused taker left nothing held
        pass
