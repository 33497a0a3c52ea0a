"""A checkpoint file of any size other than its manifest's is damage, however small the difference.

The manifest records each file's size when the save finished; a file a few bytes short is a copy or a write cut
off at its end, one a few bytes long was written to again after the manifest (another save, a stray append). Either
way resume must not trust the directory (train/checkpoint_damage.py): the size test is the one that catches a file
whose ends still look right, so it has no tolerance.
"""
from __future__ import annotations

import json

import pytest
import torch

from megadalle.train.checkpoint_damage import damage

SIZE = 100


def checkpoint(root, recorded: int):
    """A checkpoint directory whose `optim.bin` holds SIZE bytes and whose manifest says `recorded`."""
    path = root / "step_00000002"
    path.mkdir()
    (path / "optim.bin").write_bytes(bytes(range(SIZE)))
    (path / "manifest.json").write_text(json.dumps({"step": 2, "files": {"optim.bin": recorded}}))
    return path


@pytest.mark.parametrize("recorded", [SIZE - 9, SIZE - 4, SIZE - 1, SIZE + 1, SIZE + 4, SIZE + 9])
def test_a_file_a_few_bytes_off_its_manifest_size_is_damage(tmp_path, recorded):
    assert damage(checkpoint(tmp_path, recorded)) == \
        f"{tmp_path / 'step_00000002' / 'optim.bin'} has {SIZE} bytes, the manifest says {recorded}"


def test_the_recorded_size_is_complete(tmp_path):
    assert damage(checkpoint(tmp_path, SIZE)) is None


def test_a_torch_file_grown_after_the_save_is_damage_though_it_still_reads(tmp_path):
    """Bytes appended to a torch file leave its zip directory findable, so only the size tells."""
    path = tmp_path / "step_00000002"
    path.mkdir()
    torch.save({"step": 2}, path / "model.pt")
    size = (path / "model.pt").stat().st_size
    (path / "manifest.json").write_text(json.dumps({"step": 2, "files": {"model.pt": size}}))
    assert damage(path) is None
    with open(path / "model.pt", "ab") as f:
        f.write(b"\0" * 4)
    assert torch.load(path / "model.pt", weights_only=True) == {"step": 2}
    assert damage(path) == f"{path / 'model.pt'} has {size + 4} bytes, the manifest says {size}"
