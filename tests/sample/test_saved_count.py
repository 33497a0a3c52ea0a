"""A stop signal between a saved batch's file and its count: generate's stop line said "5 of 20 samples are saved"
where the file held 10 (CI saw it under load), so the line a user reads disagreed with what the rerun continued."""
import os
import signal

import pytest
import torch
from safetensors import safe_open

from megadalle.sampling import resume
from megadalle.sampling.stop import SamplingStopped, stops_on_signals


def test_a_stop_while_a_batch_is_saved_leaves_the_count_the_files(tmp_path, monkeypatch):
    saved = resume.SavedBatches(tmp_path / "unfinished.safetensors", {"seed": 0})
    saved.add(torch.zeros(5, 4, dtype=torch.long), None)
    write = resume.write_bytes

    def write_then_stopped(path, data):  # the signal lands once the file holds the new batch
        write(path, data)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(resume, "write_bytes", write_then_stopped)
    with pytest.raises(SamplingStopped), stops_on_signals():
        saved.add(torch.ones(5, 4, dtype=torch.long), None)
    with safe_open(saved.path, "pt") as f:
        assert saved.samples == f.get_slice("codes").get_shape()[0] == 10


def test_a_ctrl_c_within_waits_for_the_block_and_the_handlers_are_as_before():
    from megadalle.sampling.stop import stops_after

    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stops_after():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the block")
    assert done == ["the rest of the block"] and signal.getsignal(signal.SIGINT) is before
