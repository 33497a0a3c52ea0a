"""Export and `load_run` (what `generate` uses on a run directory) refuse a checkpoint file damaged inside, and
take the newest checkpoint again when a run still training prunes the one they chose; zip_crc names the record.

A block overwritten inside `mp_rank_00_model_states.pt` keeps the file's size and its zip directory, so the
checkpoint still counts as complete (checkpoint_damage.damage): only the zip records' CRC-32 tell (zip_crc.py). The
pruning is made without timing races: the choice of the checkpoint is wrapped so that, once it is made, a newer
checkpoint appears and the chosen one is deleted, as `trainer.keep_checkpoints=1` does.
"""
import re
import shutil
import struct
import zipfile

import pytest
import torch

from megadalle.cli import main as cli
from megadalle.train import consolidate
from megadalle.train.checkpoint import CheckpointError, LATEST
from megadalle.train.consolidate import READ_ATTEMPTS, export, load_run
from megadalle.train.zip_crc import DamagedRecord, check_crc, crc_damage
from megadalle.weights import load_weights

import dist_launch as launch

MODULE_STATES = "mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy ZeRO-1 run with checkpoints step_1 and step_2."""
    root = tmp_path_factory.mktemp("trained")
    launch.run(1, {"run_dir": str(root / "run"), "steps": 2, "zero_stage": 1, "checkpoint_every": 1,
                   "keep_checkpoints": 0}, root / "logs")
    return root / "run"


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


def step(run, n):
    return run / "checkpoints" / f"step_{n:08d}"


def overwrite_inside(file, record):
    """Zero the middle third of `record`'s bytes: same size, intact zip directory."""
    with zipfile.ZipFile(file) as archive:
        info = archive.getinfo(record)
    with open(file, "r+b") as f:
        f.seek(info.header_offset + 26)  # the local header: 30 bytes, the last 4 the lengths of what follows
        name_length, extra_length = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_length + extra_length + info.compress_size // 3)
        f.write(bytes(info.compress_size // 3))


def saved_module(checkpoint):
    saved = torch.load(checkpoint / MODULE_STATES, weights_only=True)["module"]
    return {name.removeprefix("model."): t for name, t in saved.items()}


@pytest.mark.distributed
def test_export_refuses_a_file_damaged_inside(run, tmp_path, capsys):
    damaged = step(run, 2) / MODULE_STATES
    size = damaged.stat().st_size
    overwrite_inside(damaged, "mp_rank_00_model_states/data/0")
    assert damaged.stat().st_size == size

    out = tmp_path / "out"
    assert cli(["export", f"run={run}", f"output={out}", "weights_only=true", "dtype=fp32"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(damaged) in err[0] and "mp_rank_00_model_states/data/0" in err[0], err[0]
    assert f"checkpoint={step(run, 1)}" in err[0], err[0]
    assert not out.exists()

    with pytest.raises(CheckpointError, match=re.escape(f"load checkpoint={step(run, 1)} instead")):
        load_run(run)

    assert cli(["export", f"run={run}", f"output={out}", "weights_only=true", "dtype=fp32",
                f"checkpoint={step(run, 1)}"]) == 0
    state, _ = load_weights(out, kind="toy")
    assert all(torch.equal(state[name], t) for name, t in saved_module(step(run, 1)).items())


@pytest.mark.distributed
def test_damage_in_the_oldest_checkpoint_says_none_is_older(run):
    overwrite_inside(step(run, 1) / MODULE_STATES, "mp_rank_00_model_states/data/0")
    with pytest.raises(CheckpointError, match="no complete checkpoint is older than step_00000001"):
        load_run(run, checkpoint=step(run, 1))


def pruning_after_the_choice(monkeypatch, times):
    """The first `times` choices of a checkpoint are followed by a save of the next step and the pruning of the
    chosen one (`trainer.keep_checkpoints=1`), before the chosen one is read."""
    choose, calls = consolidate.checkpoint_dir, []

    def chosen_then_pruned(run_dir, checkpoint=None):
        path = choose(run_dir, checkpoint)
        calls.append(path.name)
        if len(calls) <= times:
            newer = path.with_name(f"step_{int(path.name[5:]) + 1:08d}")
            shutil.copytree(path, newer)
            (path.parent / LATEST).write_text(newer.name)
            shutil.rmtree(path)
        return path

    monkeypatch.setattr(consolidate, "checkpoint_dir", chosen_then_pruned)
    return calls


@pytest.mark.distributed
def test_export_takes_the_newest_again_when_its_choice_is_pruned(run, tmp_path, monkeypatch, capsys):
    expected = saved_module(step(run, 2))
    calls = pruning_after_the_choice(monkeypatch, times=1)
    export(run, tmp_path / "out", dtype="fp32")
    assert calls == ["step_00000002", "step_00000003"]
    assert f"{step(run, 2)} went while it was read" in capsys.readouterr().err
    state, _ = load_weights(tmp_path / "out", kind="toy")
    assert state.keys() == expected.keys() and all(torch.equal(state[n], t) for n, t in expected.items())

    calls = pruning_after_the_choice(monkeypatch, times=1)
    model, _ = load_run(run)
    assert calls == ["step_00000003", "step_00000004"]
    assert all(torch.equal(t, expected[n]) for n, t in model.state_dict().items())


@pytest.mark.distributed
def test_a_checkpoint_pruned_on_every_attempt_is_named(run, tmp_path, monkeypatch):
    pruning_after_the_choice(monkeypatch, times=READ_ATTEMPTS)
    with pytest.raises(CheckpointError, match=f"went while it was read, {READ_ATTEMPTS} times .*keep_checkpoints"):
        export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_a_given_checkpoint_pruned_while_read_is_named(run, tmp_path, monkeypatch):
    pruning_after_the_choice(monkeypatch, times=1)
    given = re.escape(f"checkpoint={step(run, 2)} went while it was read")
    with pytest.raises(CheckpointError, match=given + ".* pass a newer"):
        export(run, tmp_path / "out", checkpoint=step(run, 2))


@pytest.mark.parametrize("record", ["state/data/0", "state/data.pkl"])
def test_each_record_is_checked_and_named(tmp_path, record):
    file = tmp_path / "state.pt"
    torch.save({"a": torch.randn(1000), "b": torch.randn(10)}, file)
    assert crc_damage(file) is None
    overwrite_inside(file, record)
    assert f"record {record} fails its check" in crc_damage(file)
    with pytest.raises(DamagedRecord, match=str(file)):
        check_crc(file)


def test_a_legacy_torch_file_has_no_crc_to_check(tmp_path):
    file = tmp_path / "legacy.pt"
    torch.save({"a": torch.randn(1000)}, file, _use_new_zipfile_serialization=False)
    assert crc_damage(file) is None
