"""A CLIP's tokenizer record is part of its export, written with the weights: it was added to the config JSON after
the export had put the weights in place, so that a crash (a kill, a full disk) between the two left a CLIP without
its record, read with a warning and never checked against the tokenizer in use."""
from __future__ import annotations

import json

import pytest

from megadalle.cli import main
from megadalle.data.digest import sha256
from megadalle.sampling import clip_record
from megadalle.train.clip import train_clip
from megadalle.weights import config_path
from tests.sample.test_train_clip import clip_config


class Crash(Exception):
    """The process killed once the weights are in place."""


def crash(*args):
    raise Crash("killed after the export was put in place")


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_record")
    train_clip(clip_config(root, "trainer.steps=2"))
    return root / "run", {"sha256": sha256(root / "tok.model"), "path": str(root / "tok.model")}


@pytest.mark.parametrize("output, keys", [("clip.safetensors", []), ("clip", ["weights_only=true"])])
def test_the_export_puts_the_record_in_place_with_the_weights(clip_run, tmp_path, monkeypatch, output, keys):
    run, record = clip_run
    monkeypatch.setattr(clip_record, "_amend", crash)  # an amend after the export, where there was one, never comes
    try:
        rc = main(["export", f"run={run}", f"output={tmp_path / output}", *keys])
    except Crash:
        rc = None
    assert json.loads(config_path(tmp_path / output).read_text())["tokenizer"] == record
    assert rc == 0


def test_train_clip_puts_the_record_in_place_with_the_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_record, "_amend", crash)
    try:
        train_clip(clip_config(tmp_path, "trainer.steps=2"))
    except Crash:  # an amend after the export, where there was one
        pass
    weights = tmp_path / "run" / "clip.safetensors"
    assert json.loads(config_path(weights).read_text())["tokenizer"] == {"sha256": sha256(tmp_path / "tok.model"),
                                                                        "path": str(tmp_path / "tok.model")}
