"""`megadalle train data=synthetic` reads no files: keys naming some are refused before the run directory exists.

They were ignored without a word (`data.shards`, `data.tokenizer`: a run on random tokens that looked like one on
the user's data), or crashed the first validation, after training, with a message naming `megadalle train` itself as
the verb synthetic data serves (`data.val_shards`)."""
import pytest

from megadalle.config.compose import compose
from megadalle.preflight import preflight
from tests.cli.preflight_run import TINY, fails

SYNTHETIC = ["train", *TINY, "data=synthetic"]


@pytest.mark.parametrize("keys, expected", [
    (["data.shards=tok4"], "data.shards=tok4: data=synthetic trains on random tokens and reads no files; drop it, or "
                           "train on token shards with data=tokens (the default)"),
    (["data.tokenizer=tok.model"], "data.tokenizer=tok.model: data=synthetic"),
    (["data.val_shards=val", "trainer.eval_every=5"], "data.val_shards=val: data=synthetic"),
    (["data.val_shards=val", "data.shards=tok4"], "data.shards=tok4 data.val_shards=val: data=synthetic trains on "
                                                  "random tokens and reads no files; drop them"),
], ids=["shards", "tokenizer", "val_shards", "both"])
def test_files_given_to_synthetic_data_are_refused_before_the_run_starts(capsys, monkeypatch, tmp_path, keys, expected):
    monkeypatch.chdir(tmp_path)
    fails(capsys, [*SYNTHETIC, f"run_dir={tmp_path / 'run'}", *keys], expected)
    assert not (tmp_path / "run").exists()


def test_synthetic_data_without_files_passes(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    preflight("train", compose("train", [*SYNTHETIC[1:], "trainer.eval_every=5"]))
