"""A dVAE of the Transformer's grid and codebook but other weights than the one that encoded its training codes is
refused by export, generate and load_pipeline, naming both digests (hunt M2): it decoded the samples as another
codebook's pictures with exit code 0. run.json records the digest the token shards' index.json meta holds, and
export copies it into bundle.json; a run or folder recording none is not checked."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import megadalle
from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.data.index import ShardIndex
from megadalle.encode import dvae_digest
from megadalle.sampling.compatible import IncompatibleModels
from megadalle.sampling.dvae_record import BUNDLE_KEY, RUN_KEY
from megadalle.train import rundir
from megadalle.weights import config_path
from tests.distributed.dist_tokens import make_token_data
from tests.imports.conftest import train_tiny
from tests.tiny_models import dvae_config, save_dvae


@pytest.fixture(scope="module")
def on_codes_of_a(tmp_path_factory):
    """(run, dVAE A, dVAE B): the tiny Transformer trained on token shards whose index.json says dVAE A encoded them,
    and B, a dVAE of the same grid and codebook with other weights."""
    root = tmp_path_factory.mktemp("codes")
    shards, tok = make_token_data(root)
    cfg = dvae_config(image_size=16, n_groups=2, vocab_size=128)
    dvaes = root / "a.safetensors", root / "b.safetensors"
    for seed, path in enumerate(dvaes):
        torch.manual_seed(seed)
        save_dvae(path, cfg)
    index = ShardIndex.load(shards)
    index.meta.update({"dvae": dvae_digest(str(dvaes[0])), "grid_size": 8, "vocab_size": 128})
    index.save()
    return train_tiny(root / "run", shards, tok), *dvaes


def generate(weights, out, *keys: str) -> int:
    return main(["generate", f"weights={weights}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 f"output={out}", *keys])


def test_export_refuses_another_dvae_naming_both_digests(on_codes_of_a, tmp_path, capsys):
    run, a, b = on_codes_of_a
    assert json.loads((run / "run.json").read_text())["sha256"][RUN_KEY] == dvae_digest(str(a))
    capsys.readouterr()
    assert main(["export", f"run={run}", f"output={tmp_path / 'refused'}", f"dvae_weights={b}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"megadalle export: dvae_weights={b}: not the dVAE whose codes the Transformer learnt (its weights' "
                   f"digest {dvae_digest(str(b))}; {run / 'run.json'} records {dvae_digest(str(a))}, the dVAE that "
                   "encoded its token shards): it would decode the samples as another codebook's pictures; give the "
                   "dVAE that encoded them (dvae_weights=FILE)\n")
    assert not (tmp_path / "refused").exists()
    assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={a}"]) == 0
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())[BUNDLE_KEY] == dvae_digest(str(a))


def test_generate_and_load_pipeline_refuse_another_dvae_for_a_run_or_its_folder(on_codes_of_a, tmp_path, capsys):
    run, a, b = on_codes_of_a
    assert generate(run, tmp_path / "out", f"dvae_weights={b}") == 2
    assert f"records {dvae_digest(str(a))}, the dVAE that encoded" in capsys.readouterr().err
    assert generate(run, tmp_path / "out", f"dvae_weights={a}") == 0
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(a))
    assert megadalle.load_pipeline(folder, rerank=False).dvae is not None
    shutil.copy(b, folder / "dvae.safetensors")  # a dVAE imported over the folder's own
    shutil.copy(config_path(b), folder / "dvae.json")
    with pytest.raises(IncompatibleModels, match=f"{folder / 'bundle.json'} records {dvae_digest(str(a))}"):
        megadalle.load_pipeline(folder, rerank=False)
    assert generate(folder, tmp_path / "out2") == 2
    assert f"digest {dvae_digest(str(b))}; {folder / 'bundle.json'} records" in capsys.readouterr().err


def test_a_run_or_folder_recording_no_dvae_is_not_checked(on_codes_of_a, tmp_path):
    """Runs from before the record (and shards encoded elsewhere, which record no dVAE) sample as they did."""
    run, a, b = on_codes_of_a
    old = tmp_path / "old"
    shutil.copytree(run, old)
    record = json.loads((old / "run.json").read_text())
    del record["sha256"][RUN_KEY]
    (old / "run.json").write_text(json.dumps(record))
    folder = write_bundle(old, tmp_path / "model", dvae_weights=str(b))
    assert json.loads((folder / "bundle.json").read_text())[BUNDLE_KEY] is None
    assert megadalle.load_pipeline(folder, rerank=False).dvae is not None
    assert generate(old, tmp_path / "out", f"dvae_weights={b}") == 0


def test_a_rerun_leaves_codes_of_another_dvae_to_the_checkpoint(tmp_path):
    """run.json's digest of the codes' dVAE is no tokenizer: a rerun on shards re-encoded since is refused by the
    checkpoint's data identity (its message says so), not by run.json's tokenizer check."""
    shards, _ = make_token_data(tmp_path)
    index = ShardIndex.load(shards)
    index.meta["dvae"] = "1" * 16
    index.save()
    config = {"data": {"source": "shards", "shards": str(shards)}}
    assert rundir.recorded_digests(config) == {RUN_KEY: "1" * 16}
    (tmp_path / "run.json").write_text(json.dumps({"config": config, "sha256": {RUN_KEY: "0" * 16}}))
    rundir.check_config(tmp_path, config)


@pytest.fixture(scope="module")
def on_codes_of_a_dvae_run(on_codes_of_a, tmp_path_factory):
    """(Transformer run, train-dvae run): the run of `on_codes_of_a` recording as its codes' dVAE a train-dvae run's
    export, that of a tiny dVAE trained 2 updates with an EMA (trainer.ema=0.5: its EMA and live weights differ)."""
    from megadalle.train.dvae import train_dvae
    from tests.dvae.conftest import write_image_shards

    root = tmp_path_factory.mktemp("dvae_run")
    write_image_shards(root / "images", 8, 32, 8)
    dvae_run = root / "dvae_run"
    train_dvae(compose("train-dvae", [f"data.shards={root / 'images'}", "data.num_workers=0", "dvae=tiny",
                                      "dvae.n_hid=16", "trainer.steps=2", "trainer.micro_batch=4", "trainer.ema=0.5",
                                      "logger=none", f"run_dir={dvae_run}"]))
    run = root / "run"
    shutil.copytree(on_codes_of_a[0], run)
    record = json.loads((run / "run.json").read_text())
    record["sha256"][RUN_KEY] = dvae_digest(str(dvae_run))
    (run / "run.json").write_text(json.dumps(record))
    return run, dvae_run


def test_the_dvae_compared_is_the_one_that_decodes(on_codes_of_a_dvae_run, tmp_path, capsys):
    """A train-dvae run read with ema=false decodes with its live weights, while the check digested its export (the
    EMA, which encoded the codes): exit code 0, the samples decoded by another dVAE."""
    run, dvae_run = on_codes_of_a_dvae_run
    capsys.readouterr()
    assert generate(run, tmp_path / "auto", f"dvae_weights={dvae_run}") == 0  # ema=auto: the EMA, as exported
    capsys.readouterr()
    assert generate(run, tmp_path / "live", f"dvae_weights={dvae_run}", "ema=false") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle generate: dvae_weights={dvae_run} read with ema=false: not the dVAE whose codes "
                          f"the Transformer learnt (its weights' digest ") and err.count("\n") == 1, err
    assert f"{run / 'run.json'} records {dvae_digest(str(dvae_run))}" in err
    assert not (tmp_path / "live").exists()


def test_a_dvae_run_exported_into_a_model_folder_is_refused(on_codes_of_a_dvae_run, tmp_path, capsys):
    """`export run=<dVAE run> output=model/dvae.safetensors` replaced the folder's dVAE behind its bundle.json."""
    run, dvae_run = on_codes_of_a_dvae_run
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae_run / "dvae.safetensors"))
    before = (folder / "dvae.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["export", f"run={dvae_run}", f"output={folder / 'dvae.safetensors'}"]) == 2
    assert capsys.readouterr().err == (
        f"megadalle export: output={folder / 'dvae.safetensors'}: inside the model folder {folder}, whose Transformer "
        "learnt the codes of its own dVAE, which no other dVAE replaces; export it to another path (a Transformer "
        "trained on its codes is exported to a model folder of its own)\n")
    assert (folder / "dvae.safetensors").read_bytes() == before
