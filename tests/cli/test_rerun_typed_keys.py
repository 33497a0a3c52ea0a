"""A run.json written before the verb-level keys were typed (`config.typed_container`) holds what an
interpolation resolved to as text: the same command must still resume it."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from megadalle.config import typed_container
from megadalle.config.train import RunConfig
from megadalle.train import rundir


def old_run(tmp_path, **config):
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps({"config": {"out_dir": "o", "trainer": {"lr": 1.0}, **config}}))
    return tmp_path


def current(monkeypatch, seed: str, new_data: str = "false") -> dict:
    """The config as train records it now, with `seed` and `new_data` given through the environment."""
    monkeypatch.setenv("R1B_SEED", seed)
    monkeypatch.setenv("R1B_NEW_DATA", new_data)
    cfg = OmegaConf.create({"seed": "${oc.env:R1B_SEED}", "new_data": "${oc.env:R1B_NEW_DATA}", "out_dir": "o",
                            "trainer": {"lr": 1.0}})
    return typed_container(cfg, RunConfig)


def test_a_run_that_recorded_its_seed_as_text_resumes_with_the_same_command(tmp_path, monkeypatch):
    run = old_run(tmp_path, seed="7", new_data="false")
    rundir.check_config(run, current(monkeypatch, "7"))


def test_another_seed_is_still_refused_and_a_text_the_schema_refuses_differs(tmp_path, monkeypatch):
    with pytest.raises(rundir.RunDirError, match=r"seed \(7 there, 8 now\)"):
        rundir.check_config(old_run(tmp_path, seed="7", new_data="false"), current(monkeypatch, "8"))
    assert rundir.config_diff({"seed": "abc"}, {"seed": 7}) == [("seed", "abc", 7)]
