"""The training console's line in a log (a Slurm output file, where its progress bar is off): the task's own metrics
beside the loss, and the updates done of the run's with the time left, which the bar would have said."""
from pathlib import Path

import pytest

from megadalle.train import console
from megadalle.train.callbacks import RunInfo


@pytest.fixture
def log_lines(tmp_path, monkeypatch, capsys):
    """A Console of train-dvae writing to a log (stdout captured, no terminal), on a clock read by hand; the
    warnings it wrote are kept in `update.err`."""
    now = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    shown = console.Console("train-dvae")
    shown.start(RunInfo(Path(tmp_path), rank=0, world_size=1, start_step=10, total_steps=30))

    def update(step, seconds, **metrics):
        now[0] += seconds
        shown.step(step, {"loss": 1.0, **metrics})
        shown.log(step, {"loss": 1.0, **metrics})
        printed = capsys.readouterr()
        update.err += printed.err
        return printed.out.splitlines()[-1]

    update.err = ""
    yield update
    shown.end()


def test_a_log_line_says_the_updates_done_and_the_time_left_at_the_mean_rate(log_lines):
    assert log_lines(10, 0.0).endswith("| 11/30 updates")  # no rate yet: the run resumed at step 10
    assert log_lines(11, 50.0).endswith("| 12/30 updates, eta 0:15:00")  # 50 s an update since the first, 18 left
    assert log_lines(12, 10.0).endswith("| 13/30 updates, eta 0:08:30")  # (50 + 10) / 2 = 30 s, 17 left
    assert log_lines(29, 1.0).endswith("| 30/30 updates")


def test_a_log_line_shows_the_dvaes_codebook_use_and_clips_accuracy(log_lines):
    line = log_lines(10, 0.0, perplexity=812.5, dead_codes=3.0, clip_acc=0.25, lr=1e-3)
    assert line.startswith("step 10: loss=1 clip_acc=0.25 perplexity=812.5 dead_codes=3 lr=0.001 |")


def test_a_warning_at_an_update_names_the_verb(log_lines):
    log_lines(10, 0.0, images_upscaled=0.25)
    assert "[train-dvae] warning: step 10: 25.0% of this update's images" in log_lines.err
