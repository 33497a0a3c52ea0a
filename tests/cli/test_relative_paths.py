"""Relative paths given to a training run: run.json records them absolute, so `export` and `generate` run from
another folder read the files the run trained with, not the ones at the same relative path there (a swapped dVAE,
in silence). A run.json from before holds them as typed: read from the folder the run was started from, refused
by name anywhere else."""
import json
import shutil

import pytest

from megadalle.cli import main
from megadalle.train import rundir
from tests.tiny_models import dvae_config, save_dvae

DVAE = dvae_config(image_size=16, n_groups=2, vocab_size=128)
"""A dVAE that decodes the tiny Transformer's 8x8 grids of 128 codes."""


def project(root, token_data):
    """`root` as a folder a run is started from: its shards, tokenizer and dVAE at the same relative paths."""
    shards, tok = token_data
    shutil.copytree(shards, root / "data" / "tokens")
    shutil.copy(tok, root / "data" / "tok.model")
    save_dvae(root / "dvae.safetensors", DVAE)
    return root


@pytest.fixture
def relative_run(token_data, tmp_path, monkeypatch, capsys):
    """A tiny Transformer run started from tmp_path/proj with every path relative, and tmp_path/other holding other
    files at the same relative paths."""
    proj, other = project(tmp_path / "proj", token_data), project(tmp_path / "other", token_data)
    monkeypatch.chdir(proj)
    command = ["train", "data.shards=data/tokens", "data.tokenizer=data/tok.model", "dvae_weights=dvae.safetensors",
               "data.num_workers=0", "model=tiny", "trainer=tiny", "trainer.micro_batch=2", "logger=none",
               "out_dir=runs", "name=rel"]
    assert main([*command, "trainer.steps=2"]) == 0
    capsys.readouterr()
    return proj, other, proj / "runs" / "transformer" / "rel", command


@pytest.mark.distributed
def test_a_run_records_its_paths_absolute_and_resumes_from_the_same_relative_command(relative_run, capsys):
    proj, _, run, command = relative_run
    config = json.loads((run / "run.json").read_text())["config"]
    assert (config["data"]["shards"], config["data"]["tokenizer"], config["dvae_weights"]) == (
        str(proj / "data" / "tokens"), str(proj / "data" / "tok.model"), str(proj / "dvae.safetensors"))
    assert config["out_dir"] == "runs" and config["data"]["val_shards"] is None  # not paths a later verb reads
    assert main([*command, "trainer.steps=3"]) == 0  # the same relative command continues the run
    assert "resumed from" in capsys.readouterr().out


@pytest.mark.distributed
def test_export_and_generate_from_another_folder_read_the_files_the_run_trained_with(relative_run, monkeypatch,
                                                                                     tmp_path):
    proj, other, run, _ = relative_run
    monkeypatch.chdir(other)
    assert main(["export", f"run={run}", "output=model"]) == 0
    sources = json.loads((other / "model" / "bundle.json").read_text())["sources"]
    assert (sources["tokenizer"], sources["dvae"]) == (str(proj / "data" / "tok.model"), str(proj / "dvae.safetensors"))
    assert main(["generate", f"weights={run}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 "output=out"]) == 0


def old_run_json(run):
    """`run`'s run.json as written before paths were recorded absolute: its paths as typed."""
    record = json.loads((run / "run.json").read_text())
    record["config"]["data"].update(tokenizer="data/tok.model", shards="data/tokens")
    record["config"]["dvae_weights"] = "dvae.safetensors"
    (run / "run.json").write_text(json.dumps(record))


@pytest.mark.distributed
def test_an_older_run_json_with_relative_paths_is_read_only_from_the_folder_it_was_started_from(
        relative_run, monkeypatch, capsys):
    proj, other, run, command = relative_run
    old_run_json(run)
    monkeypatch.chdir(other)
    assert main(["export", f"run={run}", "output=model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (other / "model").exists()
    assert (f"{run / 'run.json'}'s data.tokenizer=data/tok.model is relative to the folder the run was started from, "
            "which is not this one or cannot be told" in err)
    assert "pass tokenizer=FILE (the file the run used), run this from that folder" in err
    assert main(["generate", f"weights={run}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 "output=out"]) == 2
    assert "run.json's dvae_weights=dvae.safetensors is relative" in capsys.readouterr().err
    assert main(["export", f"run={run}", "output=model", f"tokenizer={proj / 'data' / 'tok.model'}",
                 f"dvae_weights={proj / 'dvae.safetensors'}"]) == 0  # given explicitly

    monkeypatch.chdir(proj)
    assert main(["export", f"run={run}", "output=model"]) == 0  # from where it was started
    sources = json.loads((proj / "model" / "bundle.json").read_text())["sources"]
    assert sources["dvae"] == str(proj / "dvae.safetensors")
    old_run_json(run)
    assert main([*command, "trainer.steps=3"]) == 0  # an older run resumes from there and records absolute paths
    assert json.loads((run / "run.json").read_text())["config"]["dvae_weights"] == str(proj / "dvae.safetensors")


@pytest.mark.distributed
def test_a_recorded_file_that_is_gone_is_named_with_the_run_json_that_records_it(relative_run, monkeypatch, capsys):
    proj, other, run, _ = relative_run
    (proj / "dvae.safetensors").unlink()
    (proj / "data" / "tok.model").unlink()
    monkeypatch.chdir(other)
    assert main(["export", f"run={run}", "output=model"]) == 2
    assert (f"tokenizer={proj / 'data' / 'tok.model'} (from {run / 'run.json'}'s data.tokenizer): no such file; pass "
            "tokenizer=FILE") in capsys.readouterr().err
    assert main(["generate", f"weights={run}", "tokenizer=data/tok.model", "prompt=red cat", "n=1", "keep=1",
                 "rerank=false", "output=out"]) == 2
    assert (f"{run / 'run.json'}'s dvae_weights={proj / 'dvae.safetensors'} is not there, and no dvae.safetensors "
            f"beside {run}") in capsys.readouterr().err


def test_started_here_needs_a_relative_run_directory_that_names_the_run_from_here(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "transformer" / "x"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert rundir.started_here(run, {"out_dir": "runs", "run_dir": None})
    assert rundir.started_here(run, {"run_dir": "runs/transformer/x"})
    assert not rundir.started_here(run, {"out_dir": str(tmp_path / "runs")})  # absolute: no trace of the folder
    assert not rundir.started_here(run, {"run_dir": str(run)})
    monkeypatch.chdir(run.parent)
    assert not rundir.started_here(run, {"out_dir": "runs"})


@pytest.mark.distributed
def test_a_finished_generate_from_a_run_is_done_until_the_run_saves_a_newer_checkpoint(relative_run, capsys):
    """generate's settings key stated every model file of the run directory: a stray .json there, or a checkpoint
    pruned, made a finished generate look like other settings. It states what the loader reads: run.json and the
    checkpoint it chooses."""
    proj, _, run, command = relative_run
    generate = ["generate", f"weights={run}", "prompt=red cat", "n=1", "keep=1", "rerank=false", "output=out"]
    assert main(generate) == 0
    (run / "notes.json").write_text("{}")
    capsys.readouterr()
    assert main(generate) == 0
    assert "done already (same settings)" in capsys.readouterr().out
    assert main([*command, "trainer.steps=3"]) == 0
    capsys.readouterr()
    assert main(generate) == 2
    assert "holds an earlier generate's results" in capsys.readouterr().err
