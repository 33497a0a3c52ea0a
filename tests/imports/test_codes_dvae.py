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
from megadalle.bundle import write_bundle
from megadalle.cli import main
from megadalle.data.index import ShardIndex
from megadalle.encode import dvae_digest
from megadalle.sampling.compatible import IncompatibleModels
from megadalle.sampling.dvae_record import BUNDLE_KEY, RUN_KEY
from megadalle.train import rundir
from megadalle.weights import config_path
from tests.distributed.dist_tokens import make_token_data
from tests.imports.conftest import train_tiny
from tests.sample.test_compatible import dvae_config, save_dvae


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
    assert rundir.digests(config) == {RUN_KEY: "1" * 16}
    (tmp_path / "run.json").write_text(json.dumps({"config": config, "sha256": {RUN_KEY: "0" * 16}}))
    rundir.check_config(tmp_path, config)
