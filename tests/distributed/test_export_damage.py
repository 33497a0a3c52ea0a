"""Export and `load_run` (what `generate` uses on a run directory) refuse a checkpoint file damaged inside;
zip_crc names the record.

A block overwritten inside `mp_rank_00_model_states.pt` keeps the file's size and its zip directory, so the
checkpoint still counts as complete (checkpoint.damage): only the zip records' CRC-32 tell (zip_crc.py).
"""
import re
import shutil
import struct
import zipfile

import pytest
import torch

from megadalle.cli import main as cli
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.consolidate import load_run
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
