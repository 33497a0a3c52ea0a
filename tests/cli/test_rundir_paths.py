"""A rerun names its data by another spelling of the same path, or data moved elsewhere: the run directory still
resumes, and the checkpoint's data identity or the tokenizer's sha256 stands guard over the content."""
import json
import shutil

import pytest

from megadalle.cli import main
from megadalle.train import rundir


def saved_run(tmp_path, config):
    """A run directory whose run.json records `config`, that began to save a checkpoint (one that saved none is
    refused otherwise: test_rerun.py)."""
    run = tmp_path / "runs" / "dvae" / "default"
    (run / "checkpoints" / "step_00000001").mkdir(parents=True)
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


def test_another_tokenizer_path_without_a_digest_or_a_non_path_value_still_differs(tmp_path, monkeypatch):
    """A run.json from before the digests says nothing of the tokenizer's content: another path is another
    tokenizer. The shards may move: the checkpoint's fingerprint of them refuses other data (data_identity.py)."""
    monkeypatch.chdir(tmp_path)
    run = saved_run(tmp_path, {"data": {"shards": "out/shards", "tokenizer": "out/tok.model"},
                               "model": {"attention_backend_x": "a/"}})
    with pytest.raises(rundir.RunDirError, match=r"another config: data.tokenizer \('out/tok.model' "
                                                 r"there, 'elsewhere/tok.model' now\); rerun"):
        rundir.check_config(run, {"data": {"shards": "/moved/shards", "tokenizer": "elsewhere/tok.model"},
                                  "model": {"attention_backend_x": "a/"}})
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


def test_a_copy_of_the_tokenizer_resumes_and_another_one_there_is_refused(tmp_path):
    """run.json recorded the tokenizer's sha256: a copy of it at another path (node-local disk) is the same
    tokenizer; another model at that path is not."""
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"the tokenizer the run trained with")
    config = {"data": {"tokenizer": str(tok)}}
    run = saved_run(tmp_path, config)
    (run / rundir.RUN_JSON).write_text(json.dumps({"config": config, "sha256": rundir.digests(config)}))
    copy = tmp_path / "local" / "tok.model"
    copy.parent.mkdir()
    shutil.copy(tok, copy)
    rundir.check_config(run, {"data": {"tokenizer": str(copy)}})
    copy.write_bytes(b"another tokenizer")
    with pytest.raises(rundir.RunDirError, match=r"another config: data.tokenizer"):
        rundir.check_config(run, {"data": {"tokenizer": str(copy)}})


@pytest.mark.distributed
def test_a_run_resumes_on_its_data_moved_and_is_refused_on_other_data(train_overrides, token_data, tmp_path, capsys):
    """Jobs copy their shards to node-local disk: `data.shards=<the copy>` was refused as another config,
    though the checkpoint's data identity (a fingerprint of the shards, not of their path) guards the data."""
    shards, tok = token_data
    moved, other = tmp_path / "local" / "tokens", tmp_path / "other"
    shutil.copytree(shards, moved)
    command = ["train", *train_overrides, f"run_dir={tmp_path / 'run'}", f"data.tokenizer={tok}"]
    assert main([*command, f"data.shards={shards}", "trainer.steps=2"]) == 0
    capsys.readouterr()
    assert main([*command, f"data.shards={moved}", "trainer.steps=3"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["data"]["shards"] == str(moved)
    shutil.copytree(shards, other)
    index = json.loads((other / "index.json").read_text())
    (other / index["shards"].pop()["name"]).unlink()  # one shard fewer: other data
    (other / "index.json").write_text(json.dumps(index))
    assert main([*command, f"data.shards={other}", "trainer.steps=4"]) != 0
    assert "it was trained with data fingerprint=" in capsys.readouterr().err


@pytest.mark.distributed
def test_new_data_true_goes_on_with_data_that_changed(train_overrides, token_data, tmp_path, capsys):
    """A folder that has grown (img2dataset still downloading, shards added) left no way to continue the run but
    starting again: new_data=true resumes on it, and the checkpoints after record the new data."""
    shards, tok = token_data
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    index = json.loads((other / "index.json").read_text())
    (other / index["shards"].pop()["name"]).unlink()  # one shard fewer: other data
    (other / "index.json").write_text(json.dumps(index))
    command = ["train", *train_overrides, f"run_dir={tmp_path / 'run'}", f"data.tokenizer={tok}",
               "trainer.checkpoint_every=1"]
    assert main([*command, f"data.shards={shards}", "trainer.steps=2"]) == 0
    capsys.readouterr()
    assert main([*command, f"data.shards={other}", "trainer.steps=3"]) == 2
    assert "; to continue this run on the data as it is now (a folder that has grown), add new_data=true" in \
        capsys.readouterr().err
    assert main([*command, f"data.shards={other}", "trainer.steps=3", "new_data=true"]) == 0
    out = capsys.readouterr().out
    assert "on other data (new_data=true)" in out and "at step 2" in out
    assert main([*command, f"data.shards={other}", "trainer.steps=4"]) == 0  # its checkpoints name the new data
    assert "at step 3" in capsys.readouterr().out


def test_new_data_lets_only_the_data_itself_differ():
    """The order's seed, shuffling and global batch stay the run's: new_data=true is about what the data is."""
    from megadalle.train.checkpoint import CheckpointError
    from megadalle.train.data_identity import check_data_identity

    saved = {"fingerprint": "a", "seed": 0, "shuffle": True, "global_batch": 8}
    check_data_identity(saved, {**saved, "fingerprint": "b"}, "step_2", new_data=True)
    for other in ({"fingerprint": "b", "global_batch": 16}, {"seed": 1}):
        with pytest.raises(CheckpointError, match="global_batch=16|seed=1"):
            check_data_identity(saved, {**saved, **other}, "step_2", new_data=True)


@pytest.mark.parametrize("grad_accum, accepted", [(2, "micro_batch"), (1, "update")])
def test_a_run_json_from_before_clip_negatives_resumes_under_the_value_it_ran_with(tmp_path, grad_accum, accepted):
    """CLIP runs recorded before `clip.negatives` existed contrasted each micro-batch alone: that value resumes them
    (with no accumulation both values are that), the other is refused naming a value the user can give."""
    run = saved_run(tmp_path, {"clip": {"width": 8}, "trainer": {"grad_accum": grad_accum}})
    config = {"clip": {"width": 8, "negatives": accepted}, "trainer": {"grad_accum": grad_accum}}
    rundir.check_config(run, config)
    if grad_accum > 1:
        with pytest.raises(rundir.RunDirError, match=r"clip.negatives \('micro_batch' there, 'update' now\)"):
            rundir.check_config(run, {**config, "clip": {"width": 8, "negatives": "update"}})


def test_every_differing_key_is_named(tmp_path):
    """README says the refusal names the keys that differ; past five it said "and 2 more", and the user guessed."""
    run = saved_run(tmp_path, {"trainer": {f"k{i}": i for i in range(7)}})
    with pytest.raises(rundir.RunDirError) as refused:
        rundir.check_config(run, {"trainer": {f"k{i}": i + 1 for i in range(7)}})
    assert "(4 there, 5 now) and trainer.k5, trainer.k6; rerun" in str(refused.value)


def test_a_synthetic_run_recorded_with_a_tokenizer_resumes_without_it():
    """data=synthetic reads no tokenizer, and preflight now refuses one with it: a run recorded with one before
    resumes without it (MATTERS_IN), where a run on shards still may not drop its tokenizer."""
    synthetic = {"data": {"source": "synthetic", "tokenizer": "out/tok.model"}}
    assert rundir.config_diff(synthetic, {"data": {"source": "synthetic", "tokenizer": None}}) == []
    shards = {"data": {"source": "shards", "tokenizer": "out/tok.model"}}
    assert rundir.config_diff(shards, {"data": {"source": "shards", "tokenizer": None}}) == [
        ("data.tokenizer", "out/tok.model", None)]
