"""One model folder: `export output=FOLDER` from a tiny trained run, `load_pipeline`, `generate weights=FOLDER`."""
from __future__ import annotations

import json

import pytest
import torch

import megadalle
from megadalle.bundle import BundleError, write_bundle
from megadalle.cli import main
from megadalle.weights import load_weights


def test_export_a_folder_load_it_and_generate_from_it(trained, tmp_path):
    run, tok, dvae, clip = trained
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", f"clip_weights={clip}"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.json", "clip.json", "clip.safetensors", "dvae.json", "dvae.safetensors", "tokenizer.model",
        "transformer"]
    assert (folder / "transformer" / "model.safetensors.index.json").is_file()  # bf16 shards + index
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["sources"]["tokenizer"] == str(tok)  # taken from the run's own data.tokenizer

    pipe = megadalle.load_pipeline(folder)
    state, _ = load_weights(folder / "transformer", "transformer")
    assert all(torch.equal(pipe.transformer.state_dict()[k], v.float()) for k, v in state.items())
    assert pipe.dvae.cfg.vocab_size == pipe.transformer.cfg.image_vocab and pipe.clip is not None
    assert len(pipe.tokenizer.encode("red cat", pipe.transformer.cfg.text_len)) == pipe.transformer.cfg.text_len
    half = megadalle.load_pipeline(folder, "cpu", torch.bfloat16)  # the export's own bf16, not widened
    assert all(torch.equal(half.transformer.state_dict()[k], v) for k, v in state.items())
    assert next(half.dvae.parameters()).dtype == torch.float32

    out = tmp_path / "out"
    assert main(["generate", f"weights={folder}", "prompt=red cat tree", "n=3", "keep=2", "batch_size=3",
                 f"output={out}"]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert (out / "grid.png").is_file() and len(report["all_scores"]) == 3


def test_missing_pieces_are_named(trained, tmp_path):
    run, _, dvae, _ = trained
    with pytest.raises(BundleError, match="dvae_weights: not given and not recorded"):
        write_bundle(run, tmp_path / "m")
    with pytest.raises(BundleError, match="clip_weights=.*no such file"):
        write_bundle(run, tmp_path / "m", dvae_weights=str(dvae), clip_weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(BundleError, match="not a model folder"):
        megadalle.load_pipeline(tmp_path)
    folder = write_bundle(run, tmp_path / "noclip", dvae_weights=str(dvae))  # CLIP is optional
    assert megadalle.load_pipeline(folder).clip is None
