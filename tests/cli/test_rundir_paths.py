"""A rerun names its data by another spelling of the same path: the run directory still resumes."""
import json

import pytest

from megadalle.train import rundir


def saved_run(tmp_path, config):
    run = tmp_path / "runs" / "dvae" / "default"
    run.mkdir(parents=True)
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": config}))
    return run


@pytest.mark.parametrize("now", ["out/shards/", "./out/shards", "out//shards", "{cwd}/out/shards",
                                 "{cwd}/out/../out/shards/"])
def test_the_same_path_written_differently_resumes(tmp_path, monkeypatch, now):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "shards").mkdir(parents=True)
    run = saved_run(tmp_path, {"data": {"shards": "out/shards", "tokenizer": "tok.model"}, "dvae_weights": "d.st"})
    rundir.check_config(run, {"data": {"shards": now.format(cwd=tmp_path), "tokenizer": "./tok.model"},
                              "dvae_weights": f"{tmp_path}/d.st"})


def test_another_path_or_a_non_path_value_still_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = saved_run(tmp_path, {"data": {"shards": "out/shards"}, "model": {"attention_backend_x": "a/"}})
    with pytest.raises(rundir.RunDirError, match=r"data.shards \('out/shards' there, 'out/other' now\)"):
        rundir.check_config(run, {"data": {"shards": "out/other"}, "model": {"attention_backend_x": "a/"}})
    assert rundir.config_diff({"model": {"kind": "a/"}}, {"model": {"kind": "a"}}) == [
        ("model.kind", "a/", "a")]  # only the keys that are paths are compared as paths
