"""A run directory moved or removed mid-run: training went on, DeepSpeed's save by path made `<old path>/checkpoints`
again (no run.json, no lock), and the run ended "finished" with its record and earlier checkpoints elsewhere. The run
stops at its next checkpoint with one line, and nothing comes back at the old path."""
import pytest

from megadalle.cli import main
from megadalle.train import checkpoint_save, loop


def stops_with_one_line(argv, run, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("megadalle train:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (f"megadalle train: the run directory {run.resolve()} was moved or removed while the run was in "
                        f"it ({run.resolve() / '.lock'} is no longer the file it locked): the run stops at this "
                        "checkpoint, writing nothing more at its old path; put the directory back (or rerun with "
                        "run_dir= where it is now), then rerun the same command to resume")
    assert not run.exists()


@pytest.mark.distributed
def test_a_run_directory_moved_between_saves_stops_before_the_next(train_overrides, tmp_path, capsys, monkeypatch):
    run, moved = tmp_path / "run", tmp_path / "moved"
    report = loop.Trainer._report

    def move_after_step_1(self, metrics, stop):
        skipped = report(self, metrics, stop)
        if self.step == 0:  # the first update's metrics: step 1 is next to be saved
            run.rename(moved)
        return skipped

    monkeypatch.setattr(loop.Trainer, "_report", move_after_step_1)
    stops_with_one_line(["train", *train_overrides, f"run_dir={run}", "trainer.checkpoint_every=1"], run, capsys)
    assert (moved / "run.json").is_file() and not list((moved / "checkpoints").glob("step_*"))


@pytest.mark.distributed
def test_a_run_directory_moved_during_a_save_is_said_so_not_a_full_disk(train_overrides, tmp_path, capsys,
                                                                        monkeypatch):
    run, moved = tmp_path / "run", tmp_path / "moved"
    publish = checkpoint_save._publish

    def move_first(*args):
        run.rename(moved)
        publish(*args)

    monkeypatch.setattr(checkpoint_save, "_publish", move_first)
    stops_with_one_line(["train", *train_overrides, f"run_dir={run}", "trainer.checkpoint_every=1"], run, capsys)
    assert (moved / "run.json").is_file()
