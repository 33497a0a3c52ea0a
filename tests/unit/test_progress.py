"""Progress bars in a log: a line of their own now and then, where on a terminal tqdm redraws its bar in place (in a
Slurm output file that was one "line" of thousands of carriage-return redraws)."""
import io

import pytest

from megadalle import progress
from megadalle.cli import main
from megadalle.demo_data import all_scenes, write_dataset
from megadalle.warn import warn


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_in_a_log_writes_whole_lines_every_log_seconds_and_its_last(monkeypatch):
    clock = iter(range(0, 10_000, 7))  # every reading of the clock 7 s later
    monkeypatch.setattr("tqdm.std.time", lambda: next(clock))
    log = io.StringIO()
    with progress.progress_bar(total=100, desc="encode", unit="img", file=log) as bar:
        for i in range(100):
            bar.update(1)
            if i == 50:
                warn("one odd image", "[encode] warning:")
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("encode:   0%") and lines[-1].startswith("encode: 100%|") and "100/100" in lines[-1]
    assert 3 <= len(lines) <= 100 * 7 // progress.LOG_SECONDS + 3  # not one per update: one per 30 s of the clock
    assert len(set(lines)) == len(lines)


def test_a_bar_on_a_terminal_is_tqdms_own_and_a_disabled_one_writes_nothing():
    terminal, log = Terminal(), io.StringIO()
    with progress.progress_bar(total=3, desc="generate", file=terminal, mininterval=0) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue()
    with progress.progress_bar(total=3, desc="generate", file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""


@pytest.mark.usefixtures("one_torch_thread")
def test_a_verbs_bar_in_a_captured_log_has_no_carriage_return(tmp_path, capsys):
    write_dataset(tmp_path / "raw", all_scenes()[:4], per_scene=2, size=16, seed=0)
    assert main(["prepare", f"input={tmp_path / 'raw'}", f"output={tmp_path / 'shards'}", "image_size=16",
                 "min_side=8", "num_workers=0"]) == 0
    err = capsys.readouterr().err
    assert "prepare: 100%|" in err and "\r" not in err
