"""The captions `evaluate` samples: a captions file read as `prepare` reads one, `max_captions` counting the
captions sampled, and a caption too long for the model named where it is cut."""
import json

import pytest

from megadalle.cli import main
from megadalle.config.evaluate import EvaluateConfig
from tests.eval.evaluate_command import evaluate_args
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    return tmp_path


def test_a_captions_file_breaks_lines_at_newlines_only(tmp_path):
    """str.splitlines cut a caption at U+2028, U+0085 or a form feed into fragments the model never saw, and counted
    a line of a form feed as a caption; `prepare` keeps each such line whole (megadalle.data.captions)."""
    from megadalle.evaluate import read_captions

    captions = tmp_path / "captions.txt"
    captions.write_text("a\u2028b\r\n\x0c\nc\x85d\x1ce\rlast\n", newline="")
    assert read_captions(EvaluateConfig(weights="w", captions=str(captions))) == ["a\u2028b", "c\x85d\x1ce", "last"]


def test_max_captions_counts_the_captions_sampled(models, tmp_path, capsys):
    """A caption the tokenizer reads nothing of is skipped: it took one of max_captions' places, and 1 caption
    was scored of a file that held 2 readable ones before the limit's end."""
    (models / "captions.txt").write_text("a red circle\n\ufffd\na blue square\na red square\n")
    out = tmp_path / "eval"
    assert main(evaluate_args(models, "n=1", "max_captions=2", "save_samples=true", f"output={out}")) == 0
    assert "1 of the first 3 captions hold nothing the tokenizer reads" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["captions"] == 2
    index = json.loads((out / "samples" / "index.json").read_text())
    assert [e["caption"] for e in index] == ["a red circle", "a blue square"]


def test_captions_past_max_captions_are_said_to_be_left_out(models, capsys):
    """A 70-line file scored its first 64 captions (max_captions' default) without a word, but tqdm's total."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.evaluate import readable_captions

    words = Tokenizer(models / "tokenizer.model")
    captions = [f"a red circle {i}" for i in range(70)]
    assert readable_captions(words, captions, "captions=caps70.txt", 64) == captions[:64]
    assert capsys.readouterr().err == "[evaluate] captions=caps70.txt: scoring the first 64 of 70 captions " \
                                      "(max_captions=64)\n"
    assert readable_captions(words, captions[:64], "captions=caps64.txt", 64) == captions[:64]
    assert capsys.readouterr().err == ""


def test_a_cut_caption_is_named_on_a_line_of_its_own(models, tmp_path, capsys):
    """Of many captions, "'right' is cut" did not say which; and it was printed on the progress bar's line, as
    `[generate]` under evaluate."""
    long = "a red circle at the top left and a blue square at the bottom right"
    (models / "captions.txt").write_text(f"a red circle\n{long}\n")
    assert main(evaluate_args(models, "n=1", f"output={tmp_path / 'eval'}")) == 0
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]  # as a terminal shows them
    for reader in ("the model", "CLIP"):
        assert any(line.startswith(f"[evaluate] the prompt {long!r} is ") and f" tokens and {reader} reads 8: " in line
                   for line in lines), lines
