"""`megadalle evaluate` run again into the same folder: an earlier run's results are refused unless overwrite=true.
Stopped (Ctrl-C, a stop signal), it says so in one line and leaves no folder it made."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megadalle.cli import main
from megadalle.train.signals import STOPPED_EXIT
from tests.eval.evaluate_command import evaluate_args
from tests.rerun_refusal import refused_then_overwritten
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\na blue square\n")
    return tmp_path


def test_a_rerun_into_an_earlier_runs_folder_is_refused_unless_overwrite(models, tmp_path, capsys, monkeypatch):
    base = evaluate_args(models, "n=1", f"out_dir={tmp_path}")
    metrics = refused_then_overwritten(base, "n=2", "n=1 there, 2 here", tmp_path / "evaluate", "metrics.json",
                                       monkeypatch, capsys)
    assert metrics["samples_per_caption"] == 2


def test_saved_samples_are_this_runs_alone_and_foreign_files_stay(models, tmp_path):
    """A rerun with fewer captions or samples left the earlier run's images beside its own (an outside judge read
    them as this run's); now exactly the files index.json lists are there, and the user's files stay."""
    out = tmp_path / "eval"
    (out / "samples").mkdir(parents=True)
    foreign = ["0001_009.png", "2019_holiday.png", "notes.txt"]  # the first named like evaluate's, never listed
    for name in foreign:
        (out / "samples" / name).write_text("the user's")
    assert main(evaluate_args(models, "n=3", "save_samples=true", f"output={out}")) == 0
    (models / "captions.txt").write_text("a red circle\n")
    assert main(evaluate_args(models, "n=2", "save_samples=true", "overwrite=true", "clip_score=false",
                              f"output={out}")) == 0
    index = json.loads((out / "samples" / "index.json").read_text())
    assert index == [{"caption": "a red circle", "files": ["0000_000.png", "0000_001.png"], "order": "sample number"}]
    pngs = {p.name for p in (out / "samples").glob("*.png")}
    assert pngs == {"0000_000.png", "0000_001.png", "0001_009.png", "2019_holiday.png"}
    assert all((out / "samples" / name).read_text() == "the user's" for name in foreign)
    assert main(evaluate_args(models, "n=2", "overwrite=true", f"output={out}")) == 0  # no samples asked: none left
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(foreign)


def test_caption_lines_the_tokenizer_reads_nothing_of_are_skipped_and_counted(models, tmp_path, capsys, monkeypatch):
    """A line of characters the tokenizer drops (U+FFFD; its word mark U+2581) is visible text, yet would be sampled
    from pads alone; it is skipped like a blank line, counted on stderr, and a file of nothing else is refused
    before any model is read. A line of U+200B holds no visible text: no caption, as a blank line."""
    import megadalle.bundle

    (models / "captions.txt").write_text("a red circle\n\ufffd\ufffd\n\u2581 \ufffd\n\u200b\n")
    out = tmp_path / "eval"
    assert main(evaluate_args(models, "n=1", "save_samples=true", f"output={out}")) == 0
    assert f"[evaluate] captions={models / 'captions.txt'}: 2 of the first 3 captions hold nothing the tokenizer " \
           "reads (it drops '\ufffd' U+FFFD, '\u2581' U+2581); skipped\n" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["captions"] == 1
    assert [e["caption"] for e in json.loads((out / "samples" / "index.json").read_text())] == ["a red circle"]
    monkeypatch.setattr(megadalle.bundle, "read_model", lambda *a, **k: pytest.fail("a model was read"))
    (models / "captions.txt").write_text("\ufffd\n")
    assert main(evaluate_args(models, "n=1", f"output={tmp_path / 'none'}")) == 2
    assert capsys.readouterr().err == f"megadalle evaluate: captions='{models / 'captions.txt'}': the tokenizer " \
                                      "reads nothing of any caption (it drops '\ufffd' U+FFFD)\n"
    (models / "captions.txt").write_text("\u200b\n\ufeff\u200b\n")
    assert main(evaluate_args(models, "n=1", f"output={tmp_path / 'none'}")) == 2
    assert "every line is blank (or holds only invisible characters" in capsys.readouterr().err


def test_ctrl_c_is_one_line_exit_code_130_and_leaves_no_folder_it_made(models, tmp_path, capsys, monkeypatch):
    import megadalle.evaluate

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(megadalle.evaluate, "generate", interrupt)
    out = tmp_path / "new" / "eval"
    assert main(evaluate_args(models, "n=1", f"output={out}")) == 130
    err = capsys.readouterr().err  # after the captions' progress bar
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"megadalle evaluate: interrupted; no metrics.json of this run in {out}"
    assert not (tmp_path / "new").exists()


def test_term_is_one_line_exit_code_75_and_leaves_no_folder_it_made(models, tmp_path):
    """TERM (scancel, a time limit, `timeout`, `docker stop`) killed evaluate where it stood: exit 143, nothing
    printed, and the output folders it had made left behind empty."""
    (models / "captions.txt").write_text("a red circle\n" * 2000)  # ~30 s of sampling: the signal comes mid-way
    out = tmp_path / "new" / "eval"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "megadalle", *evaluate_args(models, "n=2", "max_captions=2000",
                                                                               f"output={out}")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not out.is_dir():  # made once the models are about to be read, after the handlers are in place
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.01)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == STOPPED_EXIT and "Traceback" not in err, err[-3000:]
    assert err.splitlines()[-1] == (f"megadalle evaluate: stopped by SIGTERM; no metrics.json of this run in {out}; "
                                    "rerun the same command")
    assert not (tmp_path / "new").exists()


def test_nothing_to_measure_or_write_is_refused_naming_the_keys(models, tmp_path, capsys, monkeypatch):
    """clip_score=false fid=false sampled every caption and wrote a metrics.md of n/a alone."""
    import megadalle.bundle

    monkeypatch.setattr(megadalle.bundle, "read_model", lambda *a, **k: pytest.fail("a model was read"))
    out = tmp_path / "eval"
    assert main(evaluate_args(models, "clip_score=false", f"output={out}")) == 2
    assert capsys.readouterr().err == (
        "megadalle evaluate: clip_score=False: with fid=false and save_samples=false evaluate would sample every "
        "caption and measure and write nothing (metrics of n/a): set clip_score=true, fid=true (with real images) "
        "or save_samples=true\n")
    assert not out.exists()
