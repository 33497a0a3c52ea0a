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


@pytest.mark.parametrize("key", ["data.tokenizer", "tokenizer"])  # train's, train-clip's
def test_a_tokenizer_retrained_in_place_is_refused_by_content(tmp_path, key):
    """run.json records the tokenizer's sha256: the same path with other contents (other ids) no longer resumes;
    the same contents under another spelling do, and a run.json from before the digests resumes as it did."""
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"the tokenizer the run trained with")
    config = {"data": {"tokenizer": str(tok)}} if key == "data.tokenizer" else {"tokenizer": str(tok)}
    run = saved_run(tmp_path, config)
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": config, "sha256": rundir.digests(config)}))
    assert list(rundir.digests(config)) == [key]
    rundir.check_config(run, config)
    tok.write_bytes(b"retrained in place")
    with pytest.raises(rundir.RunDirError, match=rf"{key}={tok}: not the tokenizer the run in {run} trained with "
                                                 r"\(sha256 [0-9a-f]{12} now, [0-9a-f]{12} in its run.json"):
        rundir.check_config(run, config)
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": config}))  # recorded before the digests
    rundir.check_config(run, config)
