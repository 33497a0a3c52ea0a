"""folder_lock: one writer of an output folder at a time, the processes of a split encode together."""
import os
import socket
import subprocess
import sys

import pytest

from megadalle import folder_lock
from megadalle.folder_lock import LOCK, OutputInUse, output_lock


def test_a_second_hold_is_refused_naming_the_first_and_free_once_released(tmp_path):
    out = tmp_path / "made" / "out"
    first = output_lock(out, "prepare", {"SLURM_JOB_ID": "5"})
    with pytest.raises(OutputInUse) as refused:
        output_lock(out, "prepare")
    assert str(refused.value) == (f"output={out} is in use by a prepare (host {socket.gethostname()}, pid "
                                  f"{os.getpid()}, Slurm job 5); wait for it to end or stop it, or give another "
                                  "output=; if that process is gone (NFSv3 keeps a dead node's lock until it reboots), "
                                  f"remove {out / LOCK}")
    first.release()
    with output_lock(out, "prepare"):
        pass
    output_lock(out, "prepare").release()


def test_the_processes_of_a_split_encode_hold_together_and_exclude_a_single_one(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_lock, "SHARED_WAIT_S", 0.1)
    a, b = output_lock(tmp_path, "encode", shared=True), output_lock(tmp_path, "encode", shared=True)
    with pytest.raises(OutputInUse):
        output_lock(tmp_path, "encode")
    a.release()
    b.release()
    with output_lock(tmp_path, "encode"):
        with pytest.raises(OutputInUse):
            output_lock(tmp_path, "encode", shared=True)


def test_a_folder_moved_under_its_lock_is_lost(tmp_path):
    out = tmp_path / "out"
    lock = output_lock(out, "encode")
    assert not lock.lost()
    out.rename(tmp_path / "moved")
    assert lock.lost()
    out.mkdir()
    output_lock(out, "encode").release()  # a new folder at the path: a new lock file
    assert lock.lost()
    lock.release()


def test_an_encode_refuses_a_prepare_naming_itself_not_the_refused_verb(tmp_path):
    with output_lock(tmp_path, "encode"):
        with pytest.raises(OutputInUse, match=r"is in use by an encode \(host .*, pid \d+\); wait"):
            output_lock(tmp_path, "prepare")


def test_a_lock_file_it_may_not_open_refuses_in_one_line_naming_it(tmp_path, monkeypatch):
    """Another user's lock file in a group-writable folder: the open is refused, not a PermissionError traceback."""
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(LOCK):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OutputInUse) as refused:
        output_lock(tmp_path, "prepare")
    assert str(refused.value) == (f"cannot open {tmp_path / LOCK} (Permission denied): another user made it, or the "
                                  "folder is not writable for you; have it made writable for you (chmod g+w) or give "
                                  "another output=")


def test_the_lock_file_is_made_with_the_permissions_the_umask_leaves(tmp_path):
    """A group sharing a folder (umask 002) shares its lock file: not fixed at 0o644."""
    old = os.umask(0o002)
    try:
        output_lock(tmp_path, "encode").release()
    finally:
        os.umask(old)
    assert (tmp_path / LOCK).stat().st_mode & 0o777 == 0o664


def test_a_split_encode_of_another_job_is_refused_and_a_joiner_keeps_the_first_record(tmp_path, monkeypatch):
    first = output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True)
    record = (tmp_path / LOCK).read_text()
    assert record.endswith("\njob 5")
    with pytest.raises(OutputInUse) as refused:
        output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "6"}, shared=True)
    assert f"is in use by an encode (host {socket.gethostname()}, pid {os.getpid()}, Slurm job 5); wait" in str(
        refused.value)
    monkeypatch.setattr(os, "getpid", lambda: 1)  # a joiner writing its record would name pid 1
    joiner = output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True)
    assert (tmp_path / LOCK).read_text() == record
    first.release()
    joiner.release()


def test_a_record_of_a_job_that_ended_does_not_refuse_the_next(tmp_path):
    (tmp_path / LOCK).write_text("encode (host elsewhere, pid 1, Slurm job 9)\njob 9")
    with output_lock(tmp_path, "encode", {"SLURM_JOB_ID": "5"}, shared=True):
        assert (tmp_path / LOCK).read_text().endswith("\njob 5")


def test_the_ranks_of_one_job_starting_at_once_all_hold_it(tmp_path):
    """The first taker holds it alone for a moment, writing the job's record: the others wait it out."""
    script = ("import sys, time; from megadalle.folder_lock import output_lock; "
              "lock = output_lock(sys.argv[1], 'encode', {'TORCHELASTIC_RUN_ID': 'r1'}, shared=True); "
              "time.sleep(1); lock.release()")
    ranks = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    assert [(rank.wait(), rank.stderr.read()) for rank in ranks] == [(0, "")] * 8
    assert (tmp_path / LOCK).read_text().endswith("\njob r1")
