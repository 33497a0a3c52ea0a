"""Checks before any process group starts: required keys, paths, shards against model and tokenizer.

Each failure is one line on stderr (rank 0 only) and exit code 2, and no process group was started.
"""
import subprocess
import sys

import pytest
import torch

from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.config.required import missing

TINY = ["model=tiny", "trainer=tiny", "logger=none", "data.num_workers=0"]


def fails(capsys, argv, expected):
    started = torch.distributed.is_initialized()  # an earlier in-process training test may have started one
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert torch.distributed.is_initialized() == started
    return err


def test_yaml_required_keys_stay_required_over_schema_defaults():
    assert missing(compose("train", ["data.shards=x"])) == ["data.tokenizer"]
    assert missing(compose("train", ["data.shards=x", "data.tokenizer=t"])) == []
    assert missing(compose("train-clip")) == ["data.shards", "tokenizer"]
    assert missing(compose("train-dvae", ["data.shards=x"])) == []
    assert compose("train-dvae", ["data.shards=x"]).data.tokenizer is None  # images.yaml does not require it


def test_train_without_tokenizer_fails_before_deepspeed(capsys, token_shards):
    fails(capsys, ["train", *TINY, f"data.shards={token_shards[0]}"],
          "megadalle train: required key not set: data.tokenizer (give data.tokenizer=... on the command line)")


def test_missing_paths_are_named(capsys, token_shards, tmp_path):
    shards, tok = token_shards
    fails(capsys, ["train", *TINY, f"data.shards={tmp_path / 'nope'}", f"data.tokenizer={tok}"],
          f"data.shards={tmp_path / 'nope'}: no such directory")
    fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tmp_path / 'tok.model'}"],
          f"data.tokenizer={tmp_path / 'tok.model'}: no such file")
    fails(capsys, ["train", *TINY, f"data.shards={tmp_path}", f"data.tokenizer={tok}"], "index.json not found")
    fails(capsys, ["encode", f"dvae_weights={tmp_path / 'd.safetensors'}", f"input={shards}", "output=x"],
          "dvae_weights=")


@pytest.mark.parametrize("override, expected", [
    ("model.grid_size=4", "model.grid_size=4: the token shards"),
    ("model.image_vocab=64", "model.image_vocab=64: the token shards"),
    ("model.text_vocab=20", "model.text_vocab=20: the tokenizer"),
])
def test_token_shards_and_tokenizer_must_fit_the_model(capsys, token_shards, override, expected):
    shards, tok = token_shards
    err = fails(capsys, ["train", *TINY, f"data.shards={shards}", f"data.tokenizer={tok}", override], expected)
    assert "(set model." in err


def test_image_shards_are_not_token_shards(capsys, token_shards, image_shards):
    fails(capsys, ["train", *TINY, f"data.shards={image_shards}", f"data.tokenizer={token_shards[1]}"],
          "no codes.npy field")
    fails(capsys, ["train-dvae", "dvae=tiny", "trainer=tiny", "logger=none", f"data.shards={token_shards[0]}"],
          "this verb reads image shards")


def test_image_size_against_the_model(capsys, image_shards, token_shards):
    base = ["trainer=tiny", "logger=none", f"data.shards={image_shards}"]
    fails(capsys, ["train-dvae", "dvae=tiny", "dvae.image_size=64", *base],
          "dvae.image_size=64: the images of data.shards=")
    fails(capsys, ["train-clip", "clip=tiny", "clip.image_size=16", "data.image_size=32", *base,
                   f"tokenizer={token_shards[1]}"], "data.image_size=32: must be null or clip.image_size=16")
    fails(capsys, ["train-clip", "clip=tiny", "clip.image_size=16", "clip.text_vocab=20", *base,
                   f"tokenizer={token_shards[1]}"], "clip.text_vocab=20: the tokenizer")


def test_only_rank_zero_prints(capsys, monkeypatch, token_shards):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", *TINY, f"data.shards={token_shards[0]}"]) == 2
    assert capsys.readouterr().err == ""


def test_exit_code_and_one_line_from_the_command(token_shards):
    done = subprocess.run([sys.executable, "-m", "megadalle", "train", *TINY, f"data.shards={token_shards[0]}"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "megadalle train: required key not set: data.tokenizer (give data.tokenizer=... on the command line)"]
