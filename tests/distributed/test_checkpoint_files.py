"""Which checkpoint a resume picks: complete ones only, `latest` first, the newest complete as fall-back."""
import json

import pytest

from megadalle.train.checkpoint import CheckpointError, damage, find_resumable, prune, resolve


def fake_checkpoint(root, step, complete=True):
    path = root / f"step_{step:08d}"
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"x" * 10)
    if complete:
        (path / "manifest.json").write_text(json.dumps({"step": step, "files": {"model.pt": 10}}))
    return path


def test_latest_wins_when_complete(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("step_00000002")
    assert find_resumable(tmp_path) == "step_00000002"


def test_truncated_file_falls_back_to_previous(tmp_path, capsys):
    fake_checkpoint(tmp_path, 2)
    newest = fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("step_00000004")
    (newest / "model.pt").write_bytes(b"x" * 3)
    assert "has 3 bytes, the manifest says 10" in damage(newest)
    assert find_resumable(tmp_path) == "step_00000002"
    assert "falling back" in capsys.readouterr().err


def test_unfinished_save_and_missing_latest(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4, complete=False)
    assert find_resumable(tmp_path) == "step_00000002"
    assert resolve("auto", tmp_path) == tmp_path / "step_00000002"


def test_fresh_and_explicit_resumes(tmp_path):
    assert resolve("auto", tmp_path / "none") is None
    assert resolve("never", tmp_path / "none") is None
    fake_checkpoint(tmp_path, 2)
    broken = fake_checkpoint(tmp_path, 4)
    (broken / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt is missing"):
        resolve(str(broken), tmp_path)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        resolve("never", tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve(str(tmp_path / "nope"), tmp_path)


def test_prune_keeps_newest_complete_and_drops_older_leftovers(tmp_path):
    fake_checkpoint(tmp_path, 1, complete=False)
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 8, complete=False)  # a save in progress is never touched
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000006", "step_00000008"]
