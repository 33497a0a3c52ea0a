"""folder_lock: one writer of an output folder at a time, the processes of a split encode together."""
import os
import socket

import pytest

from megadalle.folder_lock import LOCK, OutputInUse, output_lock


def test_a_second_hold_is_refused_naming_the_first_and_free_once_released(tmp_path):
    out = tmp_path / "made" / "out"
    first = output_lock(out, "prepare", {"SLURM_JOB_ID": "5"})
    with pytest.raises(OutputInUse) as refused:
        output_lock(out, "prepare")
    assert str(refused.value) == (f"output={out} is in use by another prepare (host {socket.gethostname()}, pid "
                                  f"{os.getpid()}, Slurm job 5); wait for it to end or stop it, or give another "
                                  "output=; if that process is gone (NFSv3 keeps a dead node's lock until it reboots), "
                                  f"remove {out / LOCK}")
    first.release()
    with output_lock(out, "prepare"):
        pass
    output_lock(out, "prepare").release()


def test_the_processes_of_a_split_encode_hold_together_and_exclude_a_single_one(tmp_path):
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
