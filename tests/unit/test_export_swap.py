"""An export that replaces an earlier one and is stopped (SIGTERM, Ctrl-C) or killed at any point of putting itself in
place leaves each file or folder whole, old or new, or absent, never a mix; and the rerun the stop asks for finishes.
The earlier folder was removed in place and then the new one renamed in: a SIGTERM inside the removal left a
half-removed export that the rerun refused; a kill between a single file's two renames left the new config JSON
beside the old tensors, which loaded without a word."""
import os
import socket
import subprocess

import pytest
import torch

from megadalle.weights import ShardedWriter, SingleFileWriter, export_layout, load_weights, writers

OLD_STATE, NEW_STATE = {"w": torch.zeros(2, 3)}, {"w": torch.ones(2, 3)}
OLD_CONFIG, NEW_CONFIG = {"width": 3}, {"width": 4}


def export(target, state, config, one_file):
    writer = (SingleFileWriter if one_file else ShardedWriter)(target, export_layout(state, torch.float32),
                                                                "transformer")
    for name, tensor in state.items():
        writer.add(name, tensor)
    return writer.close(config)


def dead_owner() -> str:
    """The owner tag of a process of this host that has ended: what a killed export leaves in its temporaries' names."""
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}-{child.pid}"


class Stop(BaseException):
    """The stop a signal raises (megadalle.interrupted), or the kill, at one point of the swap."""


STOPS = [(True, at) for at in range(5)] + [(False, at) for at in range(3)]
"""Where the swap is stopped: before each of its renames (a file and its JSON moved aside, then the new ones renamed
in; a folder moved aside, the new one renamed in) or before it removes what it moved aside."""


@pytest.mark.parametrize("one_file, stop_at", STOPS,
                         ids=[f"{'one-file' if one else 'folder'}-{at}" for one, at in STOPS])
def test_a_stop_while_an_export_replaces_another_leaves_no_mix_and_the_rerun_finishes(tmp_path, monkeypatch,
                                                                                       one_file, stop_at):
    target = tmp_path / ("model.safetensors" if one_file else "model")
    export(target, OLD_STATE, OLD_CONFIG, one_file)
    calls, replace, remove = [], os.replace, writers.remove

    def counted(action):
        def step(*args):
            calls.append(action)
            if len(calls) == stop_at + 1:
                raise Stop
            return action(*args)
        return step

    monkeypatch.setattr(writers, "owner_tag", dead_owner)  # the stopped export's temporaries: its process is gone
    monkeypatch.setattr(writers.os, "replace", counted(replace))
    monkeypatch.setattr(writers, "remove", counted(remove))
    with pytest.raises(Stop):
        export(target, NEW_STATE, NEW_CONFIG, one_file)
    monkeypatch.undo()
    try:
        state, config = load_weights(target, "transformer")
    except Exception:  # absent, or the weights without their JSON: said, never loaded as a mix
        assert stop_at in ((1, 2, 3) if one_file else (1,))
    else:
        assert (config, state["w"].sum().item()) in ((OLD_CONFIG, 0.0), (NEW_CONFIG, 6.0))
    export(target, NEW_STATE, NEW_CONFIG, one_file)  # the rerun
    state, config = load_weights(target, "transformer")
    assert config == NEW_CONFIG and torch.equal(state["w"], NEW_STATE["w"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == (["model.json", "model.safetensors"] if one_file else ["model"])
