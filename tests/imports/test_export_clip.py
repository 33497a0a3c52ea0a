"""`export`'s CLIP: one trained with another tokenizer is refused naming both (hunt L1), and a directory given as
`clip_weights` or `dvae_weights` is said to be one, with the file to pass (hunt L4: it was "no such file")."""
from __future__ import annotations

import json
import shutil

from megadalle.cli import main
from megadalle.data.digest import sha256
from tests.tiny_models import tokenizer_model, trained_with


def test_export_refuses_a_clip_trained_with_another_tokenizer(trained, tmp_path, capsys):
    run, tok, dvae, clip = trained
    other = tmp_path / "other.model"
    tokenizer_model(other)
    shutil.copy(clip, tmp_path / "clip.safetensors")
    shutil.copy(clip.with_suffix(".json"), tmp_path / "clip.json")
    trained_with(tmp_path / "clip.safetensors", other)
    capsys.readouterr()
    assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={dvae}",
                 f"clip_weights={tmp_path / 'clip.safetensors'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle export: clip_weights={tmp_path / 'clip.safetensors'}: a CLIP trained with "
                          f"another tokenizer than tokenizer={tok} (sha256 {sha256(tok)[:12]}; "
                          f"{tmp_path / 'clip.json'} records {other}, sha256 {sha256(other)[:12]})")
    assert not (tmp_path / "model").exists()


def test_a_directory_given_as_a_piece_is_named_with_the_file_to_pass(trained, tmp_path, capsys):
    run, _, dvae, clip = trained
    clip_run = tmp_path / "clip_run"
    clip_run.mkdir()
    (clip_run / "run.json").write_text(json.dumps({"task_factory": "megadalle.train.clip:task_from_config",
                                                   "config": {"weights": None}}))
    out = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={out}", f"dvae_weights={dvae}", f"clip_weights={clip_run}"]) == 2
    assert capsys.readouterr().err == (
        f"megadalle export: clip_weights={clip_run}: a directory, not a weights file; pass the weights the run exports "
        f"when it finishes ({clip_run / 'clip.safetensors'}, not there: rerun its training command to finish it, or "
        f"`megadalle export run={clip_run} output=FILE.safetensors dtype=fp32` and clip_weights=FILE.safetensors)\n")
    shutil.copy(clip, clip_run / "clip.safetensors")
    assert main(["export", f"run={run}", f"output={out}", f"dvae_weights={dvae}", f"clip_weights={clip_run}"]) == 2
    assert capsys.readouterr().err.endswith(f"pass the weights the run exported: "
                                            f"clip_weights={clip_run / 'clip.safetensors'}\n")
    assert main(["export", f"run={run}", f"output={out}", f"dvae_weights={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"megadalle export: dvae_weights={tmp_path}: a directory, not a weights file; "
                                       "pass dvae_weights=FILE (a .safetensors with its .json beside)\n")
    assert not out.exists()


def test_a_folder_given_as_the_tokenizer_or_a_run_of_another_model_is_said_to_be_so(trained, tmp_path, capsys):
    """`tokenizer=<folder>` was told to pass a .safetensors, and `dvae_weights=<a Transformer's run>` to export that
    run as a dVAE and pass it."""
    run, _, dvae, clip = trained
    out = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={out}", f"dvae_weights={dvae}", f"tokenizer={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"megadalle export: tokenizer={tmp_path}: a directory, not a sentencepiece "
                                       ".model file; pass tokenizer=FILE\n")
    for key, name in (("dvae_weights", "dVAE"), ("clip_weights", "CLIP")):
        given = {"dvae_weights": dvae, key: run}
        assert main(["export", f"run={run}", f"output={out}", *(f"{k}={v}" for k, v in given.items())]) == 2
        assert capsys.readouterr().err == (
            f"megadalle export: {key}={run}: a directory, not a weights file: a run of another model "
            f"(megadalle.train.transformer:task_from_config), not of train-{key.removesuffix('_weights')}; pass the "
            f"{name} weights, {key}=FILE\n")
    assert not out.exists()
