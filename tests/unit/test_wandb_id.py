"""The wandb id of a run directory: its own checkpoint's, or a new one when the checkpoint it resumes belongs to another
run (resume=<another run's step_N>) or the directory is a copy; said only where a wandb run is logged to."""
import shutil
import sys
from types import SimpleNamespace

import pytest

from megadalle.train import wandb_log


def test_a_run_directory_without_a_record_keeps_its_own_checkpoints_id(tmp_path):
    (tmp_path / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert wandb_log.run_id(tmp_path, "abcd1234") == ("abcd1234", None)
    assert wandb_log.run_id(tmp_path, "abcd1234") == ("abcd1234", None)  # recorded now: the same again


def test_a_new_run_directory_resuming_another_runs_checkpoint_takes_a_new_id(tmp_path):
    wandb_id, note = wandb_log.run_id(tmp_path, "abcd1234")
    assert wandb_id != "abcd1234" and note == (f"{tmp_path} resumes another run's checkpoint: it logs to a new "
                                               f"wandb run {wandb_id}, not to abcd1234")
    assert wandb_log.run_id(tmp_path, wandb_id) == (wandb_id, None)


def test_a_copied_run_directory_takes_a_new_id_and_says_so(tmp_path):
    first, copy = tmp_path / "first", tmp_path / "copy"
    first.mkdir()
    original, _ = wandb_log.run_id(first, None)
    shutil.copytree(first, copy)
    wandb_id, note = wandb_log.run_id(copy, original)
    assert wandb_id != original and note == (
        f"{copy} is a copy of the run in {first.resolve()} (or was moved to another file system): it logs to a new wandb run "
        f"{wandb_id}, not to {original}")


@pytest.mark.parametrize("mode, said", [("disabled", False), ("offline", True)])
def test_logger_none_says_nothing_of_wandb_runs(tmp_path, monkeypatch, capsys, mode, said):
    """`logger=none` printed that a copy "logs to a new wandb run", which nothing logged to."""
    first, copy = tmp_path / "first", tmp_path / "copy"
    first.mkdir()
    original, _ = wandb_log.run_id(first, None)
    shutil.copytree(first, copy)
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(init=lambda **kwargs: None))
    callback = wandb_log.Wandb(SimpleNamespace(mode=mode, project="p", entity=None, name=None))
    callback.start(SimpleNamespace(rank=0, run_dir=str(copy), wandb_id=original, start_step=0, config={}))
    assert ("[wandb]" in capsys.readouterr().err) == said
    assert callback.run_id != original
