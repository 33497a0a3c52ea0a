"""No writer of weights but a model folder's own export writes into the folder: `import-dvae output=` and train-dvae's
or train-clip's `weights=` replaced its dVAE or CLIP (or put a file among its pieces) behind its bundle.json's back,
as only `export` was kept from doing (weights.check_replaceable, which they all pass, now refuses it)."""
from __future__ import annotations

import json

import pytest

from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.export import export


def contents(folder):
    return {str(p.relative_to(folder)): p.is_dir() or p.read_bytes() for p in sorted(folder.rglob("*"))}


def refusal(folder, key, target, model):
    """A dVAE has no way into a model folder (its Transformer learnt the codes of its own); a CLIP is exported
    elsewhere, then the folder with it, from the run its bundle.json names and its own tokenizer and dVAE."""
    where = f"{key}={target}: inside the model folder {folder}, whose "
    if model == "dVAE":
        return (f"{where}Transformer learnt the codes of its own dVAE, which no other dVAE replaces; export it to "
                "another path (a Transformer trained on its codes is exported to a model folder of its own)\n")
    run = json.loads((folder / "bundle.json").read_text())["sources"]["run"]
    return (f"{where}Transformer and bundle.json a CLIP exported alone would not match; export it to another path "
            f"(CLIP.safetensors), then the whole folder with `megadalle export run={run} output={folder} "
            f"tokenizer={folder / 'tokenizer.model'} dvae_weights={folder / 'dvae.safetensors'} "
            "clip_weights=CLIP.safetensors`\n")


@pytest.fixture(scope="module")
def model_folder(trained, tmp_path_factory):
    run, _, dvae, clip = trained
    return write_bundle(run, tmp_path_factory.mktemp("guard") / "model", dvae_weights=str(dvae),
                        clip_weights=str(clip))


@pytest.mark.parametrize("name", ["dvae.safetensors", "transformer/dvae.safetensors", "other.safetensors"])
def test_import_dvae_into_a_model_folder_is_refused(model_folder, tmp_path, capsys, name):
    encoder, decoder = tmp_path / "encoder.pkl", tmp_path / "decoder.pkl"
    for path in (encoder, decoder):
        path.write_bytes(b"refused before it is read")
    before = contents(model_folder)
    target = model_folder / name
    assert main(["import-dvae", f"encoder={encoder}", f"decoder={decoder}", f"output={target}"]) == 2
    assert capsys.readouterr().err == "megadalle import-dvae: " + refusal(model_folder, "output", target, "dVAE")
    assert contents(model_folder) == before


@pytest.mark.parametrize("verb, name, model", [("train-dvae", "dvae.safetensors", "dVAE"),
                                               ("train-dvae", "sub/dvae.safetensors", "dVAE"),
                                               ("train-clip", "clip.safetensors", "CLIP")])
def test_a_training_verbs_weights_into_a_model_folder_are_refused_before_it_trains(model_folder, capsys, verb, name,
                                                                                   model):
    before = contents(model_folder)
    target = model_folder / name
    needs = ["tokenizer=none.model"] if verb == "train-clip" else []
    assert main([verb, "data.shards=nowhere", *needs, f"weights={target}"]) == 2
    assert capsys.readouterr().err == f"megadalle {verb}: " + refusal(model_folder, "weights", target, model)
    assert contents(model_folder) == before


def test_the_python_exports_transformer_alone_stays_out_of_a_model_folder(trained, model_folder):
    """`export(run, model/x.safetensors)` from Python wrote into the folder: the verb alone refused it."""
    before = contents(model_folder)
    with pytest.raises(Exception, match=f"^output={model_folder / 'x.safetensors'}: inside the model folder "):
        export(trained[0], model_folder / "x.safetensors")
    assert contents(model_folder) == before
