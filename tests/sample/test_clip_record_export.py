"""A CLIP's tokenizer record is part of its export, written with the weights: it was added to the config JSON after
the export had put the weights in place, so that a crash (a kill, a full disk) between the two left a CLIP without
its record, read with a warning and never checked against the tokenizer in use. Here the process is killed the moment
the weights are put in place: their config JSON holds the record by then."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from megadalle.cli import main
from megadalle.data.digest import sha256
from megadalle.train.clip import train_clip
from megadalle.weights import config_path
from tests.sample.clip_run import clip_config


class Crash(Exception):
    """The process killed once the weights are in place."""


def killed_when_published(monkeypatch, weights: Path) -> list[dict]:
    """os.replace, killing the process right after it puts `weights` (a file or a folder of shards) in place; the
    list returned gets the config JSON as it stood then."""
    real, published = os.replace, []

    def replace(source, target, *args, **kwargs):
        real(source, target, *args, **kwargs)
        if Path(target) == weights:
            published.append(json.loads(config_path(weights).read_text()))
            raise Crash("killed once the export was put in place")

    monkeypatch.setattr(os, "replace", replace)
    return published


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_record")
    train_clip(clip_config(root, "trainer.steps=2"))
    return root / "run", {"sha256": sha256(root / "tok.model"), "path": str(root / "tok.model")}


@pytest.mark.parametrize("output, keys", [("clip.safetensors", []), ("clip", ["weights_only=true"])])
def test_the_export_puts_the_record_in_place_with_the_weights(clip_run, tmp_path, monkeypatch, output, keys):
    run, record = clip_run
    published = killed_when_published(monkeypatch, tmp_path / output)
    with pytest.raises(Crash):
        main(["export", f"run={run}", f"output={tmp_path / output}", *keys])
    assert [config["tokenizer"] for config in published] == [record]


def test_train_clip_puts_the_record_in_place_with_the_weights(tmp_path, monkeypatch):
    published = killed_when_published(monkeypatch, tmp_path / "run" / "clip.safetensors")
    with pytest.raises(Crash):
        train_clip(clip_config(tmp_path, "trainer.steps=2"))
    assert [config["tokenizer"] for config in published] == [{"sha256": sha256(tmp_path / "tok.model"),
                                                              "path": str(tmp_path / "tok.model")}]
