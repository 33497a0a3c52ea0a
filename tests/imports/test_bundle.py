"""One model folder: `export output=FOLDER` from a tiny trained run, `load_pipeline`, `generate weights=FOLDER`."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from omegaconf import OmegaConf

import megadalle
from megadalle import export
from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.config.compose import compose
from megadalle.errors import BundleError, UserError
from megadalle.sampling.compatible import IncompatibleModels
from megadalle.sampling.load import ModelNotFound, WrongKind, model_config
from megadalle.sampling.rerank import RerankerError, as_reranker
from megadalle.weights import load_weights
from tests.tiny_models import dvae_config, save_dvae


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
    assert manifest["sources"]["checkpoint"] == "step_00000002"  # the run's newest: it may train on

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


def test_load_pipeline_takes_the_dtype_names_generate_takes(trained, tmp_path):
    """dtype="bf16" used to reach tensor.to("bf16") (a device string to torch); now the CLI's names or a floating
    torch.dtype, and anything else is refused by the parameter's name before a tensor is read."""
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    for dtype, expected in (("bf16", torch.bfloat16), ("fp32", torch.float32), ("auto", torch.float32),
                            (torch.bfloat16, torch.bfloat16)):
        pipe = megadalle.load_pipeline(folder, "cpu", dtype)
        assert next(pipe.transformer.parameters()).dtype == expected
        assert next(pipe.dvae.parameters()).dtype == torch.float32
    for bad in ("bfloat16", torch.int64, None):
        with pytest.raises(ValueError, match=r"^dtype=.*: expected one of auto, fp32, bf16$"):
            megadalle.load_pipeline(folder, dtype=bad)
    with pytest.raises(ValueError, match=r"^dtype=torch.float8_e4m3fn: the models compute in torch.float32, "):
        megadalle.load_pipeline(folder, dtype=torch.float8_e4m3fn)  # was taken, then failed in the sampler


def test_generate_from_a_run_directory_finds_the_tokenizer_its_run_recorded(trained, tmp_path):
    run, tok, dvae, _ = trained
    assert not (run / "tokenizer.model").exists() and not (run.parent / "tokenizer.model").exists()
    assert main(["generate", f"weights={run}", f"dvae_weights={dvae}", "prompt=red cat", "n=2", "keep=2", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 0  # data.tokenizer of its run.json


def test_ema_of_exported_weights_is_refused_by_name(trained, tmp_path, capsys):
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=1", "keep=1", "ema=true", f"output={tmp_path}"]) == 2
    assert "holds exported weights (exported with ema=false): drop ema=true" in capsys.readouterr().err
    assert main(["export", f"run={run}", f"output={tmp_path / 'ema'}", f"dvae_weights={dvae}", "ema=true"]) == 2
    assert "ema=true" in capsys.readouterr().err and not (tmp_path / "ema").exists()  # no half-made folder left
    with pytest.raises(RerankerError, match="is not megadalle's CLIP: pass a reranker"):
        as_reranker(torch.nn.Linear(2, 2), None)


def test_missing_pieces_are_named(trained, tmp_path, capsys):
    run, _, dvae, clip = trained
    with pytest.raises(BundleError, match="dvae_weights: not given and not recorded"):
        write_bundle(run, tmp_path / "m")
    with pytest.raises(BundleError, match="clip_weights=.*no such file"):
        write_bundle(run, tmp_path / "m", dvae_weights=str(dvae), clip_weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelNotFound, match="no clip.safetensors beside .*or pass rerank=False"):
        megadalle.load_pipeline(tmp_path)  # read as generate reads weights=FOLDER
    folder = write_bundle(run, tmp_path / "noclip", dvae_weights=str(dvae), clip_weights=str(clip))
    folder = write_bundle(run, folder, dvae_weights=str(dvae))  # CLIP is optional; the earlier export's goes
    assert megadalle.load_pipeline(folder).clip is None
    assert not (folder / "clip.safetensors").exists() and not (folder / "clip.json").exists()
    out = tmp_path / "out"
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=2", "keep=2", "rerank=false", f"output={out}"]) == 0
    assert json.loads((out / "scores.json").read_text())["all_scores"] is None
    shutil.copy(clip, tmp_path / "clip.safetensors")  # another model's CLIP beside the folder is not its CLIP
    shutil.copy(clip.with_suffix(".json"), tmp_path / "clip.json")
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=2", "keep=2", f"output={out}",
                 "overwrite=true"]) == 2
    assert "exported without a CLIP: pass rerank=false" in capsys.readouterr().err


def test_evaluate_refuses_them_too_and_reads_a_model_folder(trained, tmp_path, capsys):
    run, tok, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    captions = tmp_path / "captions.txt"
    captions.write_text("red cat\nblue tree\n")
    out = tmp_path / "eval"
    assert main(["evaluate", f"weights={folder}", f"captions={captions}", "n=2", "batch_size=2", "fid=false",
                 f"output={out}", "device=cpu"]) == 0
    assert json.loads((out / "metrics.json").read_text())["captions"] == 2  # the model folder read as generate reads it
    other = save_dvae(tmp_path / "other.safetensors", dvae_config(image_size=16, n_groups=3, vocab_size=128))
    assert main(["evaluate", f"weights={folder}", f"dvae_weights={other}", f"captions={captions}", "n=2",
                 "fid=false", f"output={tmp_path / 'eval2'}", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "not trained together" in err and "Traceback" not in err


@pytest.mark.parametrize("name, options, why", [
    ("notes", ["weights_only=true"], "exists and is neither empty nor an exported weights folder (no "
              "model.safetensors.index.json)"),
    ("w.safetensors", [], "a folder, where the export writes one .safetensors file"),
    ("notes/notes.txt", [], "a file; give a folder")])
def test_export_refuses_an_output_it_would_not_replace_before_reading_any_weights(trained, tmp_path, capsys,
                                                                                 monkeypatch, name, options, why):
    """`weights_only=true output=<a folder of other files>` used to stream every tensor, then raise
    FileExistsError; a model folder's output where a file stands failed in mkdir, as a traceback."""
    import megadalle.train.consolidate as consolidate

    run = trained[0]
    monkeypatch.setattr(consolidate, "checkpoint_tensors", lambda *a, **k: pytest.fail("weights read"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    (tmp_path / "w.safetensors").mkdir()
    target = tmp_path / name
    assert main(["export", f"run={run}", f"output={target}", f"dvae_weights={trained[2]}", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"megadalle export: output={target}: {why}") and len(err.splitlines()) == 1
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine" and not list(tmp_path.glob("*.tmp-*"))


def test_an_open_clip_reranker_without_its_weights_is_refused(trained, tmp_path, capsys):
    """`clip_model=open_clip:X` without `clip_weights` used to export a folder with no CLIP, saying nothing."""
    run, _, dvae, _ = trained
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", "clip_model=open_clip:RN50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("megadalle export: clip_model='open_clip:RN50': needs clip_weights=FILE")
    assert not folder.exists()
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", "clip_model=openclip"]) == 2
    assert "clip_model='openclip': expected megadalle or open_clip:<arch>" in capsys.readouterr().err


def test_export_refuses_a_mismatched_dvae_and_a_run_of_another_model(trained, tmp_path, capsys):
    run, tok, dvae, clip = trained
    other = save_dvae(tmp_path / "other.safetensors", dvae_config(image_size=16, n_groups=3, vocab_size=128))
    with pytest.raises(IncompatibleModels, match="codes 16 px images as a 4x4 grid"):
        write_bundle(run, tmp_path / "model", dvae_weights=str(other), clip_weights=str(clip))
    assert not (tmp_path / "model").exists()  # refused before anything was written

    dvae_run = tmp_path / "dvae_run"
    dvae_run.mkdir()
    config = OmegaConf.to_container(compose("train-dvae", ["dvae=tiny", f"data.shards={tmp_path}"]), resolve=True)
    (dvae_run / "run.json").write_text(json.dumps({"task_factory": "megadalle.train.dvae:task_from_config",
                                                   "config": config}))
    with pytest.raises(WrongKind, match="is a 'dvae' training run, not a 'transformer' one"):
        write_bundle(dvae_run, tmp_path / "m2", tokenizer=str(tok), dvae_weights=str(dvae))
    with pytest.raises(WrongKind, match="is a 'dvae' training run, not a 'transformer' one"):  # the verb's task
        export.run(compose("export", [f"run={dvae_run}", f"output={tmp_path / 'm3'}", f"tokenizer={tok}",
                                      f"dvae_weights={dvae}"]))
    assert not (tmp_path / "m3").exists()
    assert main(["export", f"run={dvae_run}", f"output={tmp_path / 'm3'}", f"tokenizer={tok}",
                 f"dvae_weights={dvae}"]) == 2  # with the ways a dVAE run is exported
    assert capsys.readouterr().err.strip() == (
        f"megadalle export: {dvae_run} is a 'dvae' training run, not a 'transformer' one; export its weights alone: "
        f"`megadalle export run={dvae_run} output={tmp_path / 'm3'} weights_only=true`, or as one file: "
        f"`megadalle export run={dvae_run} output=FILE.safetensors`")
    assert model_config(dvae_run, "dvae").vocab_size == config["dvae"]["vocab_size"]


def other_tokenizer(run, path):
    """A tokenizer of the run's captions with other pieces: the Transformer's embedding fits it, its ids differ."""
    from megadalle.data.tokenizer import train_tokenizer

    train_tokenizer(run.parent / "captions", path, vocab_size=36)
    return path


def test_the_tokenizer_is_checked_by_content_from_run_to_folder(trained, tmp_path, capsys):
    """run.json and bundle.json record the tokenizer's sha256: export refuses another tokenizer naming both files,
    and a folder whose tokenizer.model was swapped is refused by generate and load_pipeline; a bundle.json from
    before the digests still loads."""
    from megadalle.data.digest import sha256

    run, tok, dvae, _ = trained
    assert json.loads((run / "run.json").read_text())["sha256"] == {"data.tokenizer": sha256(tok)}
    other = other_tokenizer(run, tmp_path / "other.model")
    capsys.readouterr()  # its progress bar
    assert main(["export", f"run={run}", f"output={tmp_path / 'refused'}", f"dvae_weights={dvae}",
                 f"tokenizer={other}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle export: tokenizer={other}: not the tokenizer the Transformer was trained with")
    assert f"{run / 'run.json'} records {tok}" in err and not (tmp_path / "refused").exists()

    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["sha256"] == {"tokenizer": sha256(tok)}
    shutil.copy(other, folder / "tokenizer.model")
    with pytest.raises(IncompatibleModels, match=f"records {tok}, sha256 {sha256(tok)[:12]}"):
        megadalle.load_pipeline(folder)
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 2
    assert "tokenizer.model: not the tokenizer the Transformer was trained with" in capsys.readouterr().err
    assert main(["generate", f"weights={folder}", f"tokenizer={tok}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 0  # the tokenizer it trained with, given back
    del manifest["sha256"]
    (folder / "bundle.json").write_text(json.dumps(manifest))
    assert megadalle.load_pipeline(folder).tokenizer.vocab_size == 36  # recorded before the digests: not checked


def test_a_run_directory_samples_with_what_its_run_recorded(trained, tmp_path, capsys):
    """A tokenizer.model and a dvae.safetensors lying beside a run directory belonged to another model, while export
    takes the run's recorded ones: generate from the run now takes the recorded ones too, as its export would."""
    from megadalle.sampling.files import sampling_files

    run, tok, dvae, _ = trained
    copy = tmp_path / "runs" / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "run.json").read_text())
    record["config"]["dvae_weights"] = str(dvae)
    (copy / "run.json").write_text(json.dumps(record))
    other_tokenizer(run, tmp_path / "runs" / "tokenizer.model")
    save_dvae(tmp_path / "runs" / "dvae.safetensors", dvae_config(image_size=16, n_groups=3, vocab_size=128))
    capsys.readouterr()  # the tokenizer's progress bar
    files = sampling_files(copy, want_clip=False)
    assert (files.tokenizer, files.dvae) == (tok, dvae)
    assert main(["generate", f"weights={copy}", "prompt=red cat", "n=1", "keep=1", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 0
    assert main(["generate", f"weights={copy}", f"tokenizer={tmp_path / 'runs' / 'tokenizer.model'}",
                 "prompt=red cat", "n=1", "keep=1", "rerank=false", f"output={tmp_path / 'out'}",
                 "overwrite=true"]) == 2
    assert f"{copy / 'run.json'} records {tok}" in capsys.readouterr().err


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_refused_or_failed_re_export_leaves_the_earlier_export_working(trained, tmp_path, capsys, monkeypatch):
    """A re-export refused for its checkpoint or its EMA used to delete bundle.json first, leaving a folder that
    generate called unfinished over intact weights; the earlier export now stands until the new Transformer
    replaces it, and only a failure after that leaves the folder unfinished."""
    import megadalle.bundle_write as bundle_write
    import megadalle.train.consolidate as consolidate
    from megadalle.sampling.files import sampling_files

    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    before = listing(folder)
    for typo in ("ema=true", f"checkpoint={run / 'checkpoints' / 'step_99'}"):
        assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", typo]) == 2
        assert typo.split("=")[0] in capsys.readouterr().err and listing(folder) == before

    def failing(*args, **kwargs):
        yield from list(real(*args, **kwargs))[:2]
        raise OSError("No space left on device")

    real = consolidate.checkpoint_tensors
    monkeypatch.setattr(consolidate, "checkpoint_tensors", failing)
    with pytest.raises(OSError, match="No space left"):
        write_bundle(run, folder, dvae_weights=str(dvae), clip_weights=str(clip))
    assert listing(folder) == before  # its temporary gone, the earlier export whole
    monkeypatch.undo()
    assert megadalle.load_pipeline(folder).clip is not None
    assert main(["generate", f"weights={folder}", "prompt=red cat", "n=1", "keep=1", f"output={tmp_path / 'out'}"]) == 0

    monkeypatch.setattr(bundle_write, "_copy", lambda *a: (_ for _ in ()).throw(OSError("No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        write_bundle(run, folder, dvae_weights=str(dvae), clip_weights=str(clip))
    with pytest.raises(BundleError, match="unfinished export"):  # the Transformer was replaced: honest about it
        sampling_files(folder)


def test_export_writes_no_model_folder_among_other_files(trained, tmp_path, capsys):
    """`export output=<a run, its checkpoints, image shards, a generate output>` used to exit 0 with transformer/,
    bundle.json, tokenizer, dVAE and CLIP dropped among the user's files; an empty folder is taken."""
    run, _, dvae, _ = trained
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "shard-000000.tar").write_text("images")
    for target in (run, run / "checkpoints", shards):
        before = listing(target)
        assert main(["export", f"run={run}", f"output={target}", f"dvae_weights={dvae}"]) == 2
        err = capsys.readouterr().err.strip()
        why = (f"inside the checkpoints of the training run {run}, which deletes there what it does not keep "
               "(trainer.keep_checkpoints), an export too; give another path" if target.name == "checkpoints" else
               "exists and is neither empty nor a model folder (no bundle.json), so the export will not replace it; "
               "give another path, or remove it")
        assert err == f"megadalle export: output={target}: {why}"
        assert listing(target) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", f"run={run}", f"output={empty}", f"dvae_weights={dvae}"]) == 0
    assert megadalle.load_pipeline(empty).clip is None
    weights = tmp_path / "weights"
    weights.mkdir()
    assert main(["export", f"run={run}", f"output={weights}", "weights_only=true"]) == 0  # the same rule
    assert (weights / "model.safetensors.index.json").is_file()


def test_a_re_export_may_take_the_folders_own_files(trained, tmp_path):
    """`export output=model tokenizer=model/tokenizer.model dvae_weights=model/dvae.safetensors` (a newer
    checkpoint with the folder's own pieces) used to fail in shutil.SameFileError, leaving the folder unfinished."""
    run, tok, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    assert main(["export", f"run={run}", f"output={folder}", f"tokenizer={folder / 'tokenizer.model'}",
                 f"dvae_weights={folder / 'dvae.safetensors'}", f"clip_weights={folder / 'clip.safetensors'}"]) == 0
    assert (folder / "tokenizer.model").read_bytes() == tok.read_bytes()
    assert (folder / "dvae.safetensors").read_bytes() == dvae.read_bytes()
    assert megadalle.load_pipeline(folder).clip is not None


def test_a_re_export_rewrites_a_folder_whose_bundle_json_is_garbled(trained, tmp_path, capsys):
    """Every reader of a garbled bundle.json advises to re-export the weights, which the export refused for that very
    file; a folder whose Transformer an export wrote is rewritten, a garbled bundle.json beside none is named."""
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    (folder / "bundle.json").write_text("{not json")
    elsewhere = tmp_path / "step_00000002"  # a checkpoint refused left the folder without its bundle.json
    elsewhere.mkdir()
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", f"checkpoint={elsewhere}"]) == 2
    assert (folder / "bundle.json").read_text() == "{not json"
    with pytest.raises(UserError, match="not valid JSON.*; re-export the weights"):
        megadalle.load_pipeline(folder)
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}"]) == 0  # without a CLIP now
    assert megadalle.load_pipeline(folder).clip is None and not list(folder.glob("clip.*"))  # the earlier one gone
    capsys.readouterr()

    other = tmp_path / "other"
    other.mkdir()
    (other / "bundle.json").write_text("{not json")
    (other / "notes.txt").write_text("mine")
    assert main(["export", f"run={run}", f"output={other}", f"dvae_weights={dvae}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"megadalle export: {other / 'bundle.json'}: garbled (no JSON object), and {other} holds no "
                   "Transformer an export wrote (transformer/), so the export will not take it for a model folder; "
                   f"remove {other / 'bundle.json'}, or give another path")
    assert sorted(p.name for p in other.iterdir()) == ["bundle.json", "notes.txt"]


def test_an_output_named_both_file_and_folder_is_refused(trained, tmp_path, capsys):
    """`output=x.safetensors/` used to write a model folder named x.safetensors (and weights_only=true one file)."""
    run, _, dvae, _ = trained
    for options in ([f"dvae_weights={dvae}"], ["weights_only=true"]):
        assert main(["export", f"run={run}", f"output={tmp_path / 'x.safetensors'}/", *options]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"megadalle export: output={tmp_path / 'x.safetensors'}/: ends in .safetensors (one file) "
                       "and in / (a folder); drop the / to write one file, or name the folder otherwise")
        assert not list(tmp_path.iterdir())
    for options in ([f"dvae_weights={dvae}"], ["weights_only=true"]):  # it wrote a folder named like a file
        assert main(["export", f"run={run}", f"output={tmp_path / 'x.SafeTensors'}", *options]) == 2
        assert capsys.readouterr().err.strip() == (f"megadalle export: output={tmp_path / 'x.SafeTensors'}: ends in "
                                                   ".SafeTensors; write .safetensors for one file, or name the folder "
                                                   "otherwise")
        assert not list(tmp_path.iterdir())


def test_one_shard_as_weights_names_its_folder(trained, tmp_path, capsys):
    """`generate weights=<model-00001-of-00001.safetensors>` used to ask for model-00001-of-00001.json."""
    from megadalle.weights import WeightsNotFound

    run, _, dvae, _ = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    shard = folder / "transformer" / "model-00001-of-00001.safetensors"
    assert main(["generate", f"weights={shard}", "prompt=red cat", "n=1", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err.strip() == (f"megadalle generate: weights={shard}: one shard of the weights in "
                                               f"{folder}; pass weights={folder}")
    with pytest.raises(WeightsNotFound, match=f"one shard of the weights in {folder / 'transformer'}: give the folder"):
        load_weights(shard, "transformer")


def test_a_model_folders_record_as_weights_names_its_folder(trained, tmp_path, capsys):
    """bundle.json, the folder's one top-level JSON, was read as a weights index and called damaged ("lacks
    weight_map; re-export the weights")."""
    run, _, dvae, _ = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae))
    assert main(["generate", f"weights={folder / 'bundle.json'}", "prompt=red cat", "n=1", "rerank=false",
                 f"output={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err.strip() == (f"megadalle generate: weights={folder / 'bundle.json'}: the record of "
                                               f"the model folder {folder}; pass weights={folder}")


def test_generate_writes_nothing_into_a_model_folder_and_export_lists_only_its_own_files(trained, tmp_path, capsys):
    """generate (and evaluate) wrote grid, samples and scores into a model folder given as output, and the next
    export listed them, the lock and a hand-added file as what it wrote."""
    run, _, dvae, _ = trained
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}"]) == 0
    capsys.readouterr()
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    for output in (folder, folder / "samples"):
        assert main(["generate", f"weights={folder}", "prompt=red cat", "n=1", "rerank=false",
                     f"output={output}"]) == 2
        assert capsys.readouterr().err.strip() == (f"megadalle generate: output={output}: inside the model folder "
                                                   f"{folder}, which only its export writes; give another folder")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", "dtype=fp32"]) == 0  # written
    assert capsys.readouterr().err.strip().endswith(
        "(fp32, the live weights of step_00000002): bundle.json, dvae.json, dvae.safetensors, tokenizer.model, "
        "transformer")
    assert (folder / "notes.txt").read_text() == "mine"


def test_export_to_one_file_replaces_only_a_transformers_weights(trained, tmp_path, capsys):
    """`export output=dvae.safetensors` of a Transformer run wrote over the dVAE and its dvae.json, exit code 0."""
    run, _, dvae, _ = trained
    shutil.copy(dvae, tmp_path / "dvae.safetensors")
    shutil.copy(dvae.with_suffix(".json"), tmp_path / "dvae.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["export", f"run={run}", f"output={tmp_path / 'dvae.safetensors'}"]) == 2
    assert capsys.readouterr().err == (f"megadalle export: output={tmp_path / 'dvae.safetensors'}: holds the weights "
                                       "of a 'dvae' model, and this export writes a 'transformer' one, so it will not "
                                       "replace them; give another path, or remove it\n")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    for _ in range(2):  # an earlier export of the Transformer is replaced
        assert main(["export", f"run={run}", f"output={tmp_path / 'model.safetensors'}"]) == 0
    assert load_weights(tmp_path / "model.safetensors", "transformer")[1]["d_model"] > 0


def test_exports_dvae_and_clip_checks_name_a_damaged_file(trained, tmp_path, capsys):
    """A dVAE or CLIP file cut short was a SafetensorError traceback, exit code 1."""
    run, _, dvae, clip = trained
    for source, key in ((dvae, "dvae_weights"), (clip, "clip_weights")):
        damaged = tmp_path / source.name
        damaged.write_bytes(source.read_bytes()[:1000])
        shutil.copy(source.with_suffix(".json"), damaged.with_suffix(".json"))
        given = [f"{k}={v}" for k, v in {"dvae_weights": dvae, key: damaged}.items()]
        assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", *given]) == 2
        assert capsys.readouterr().err.startswith(f"megadalle export: {damaged}: not a whole safetensors file (")
        assert not (tmp_path / "model").exists()


def test_export_refuses_a_dvae_or_clip_whose_json_does_not_fit_its_tensors(trained, tmp_path, capsys):
    """A dVAE whose JSON says another width was read as tensors alone and copied into the folder (exit code 0),
    which generate then failed to load."""
    run, _, dvae, clip = trained
    for source, key, setting in ((dvae, "dvae_weights", "n_hid"), (clip, "clip_weights", "text_width")):
        bad = tmp_path / key / source.name
        bad.parent.mkdir()
        shutil.copy(source, bad)
        record = json.loads(source.with_suffix(".json").read_text())
        record["config"][setting] *= 2
        bad.with_suffix(".json").write_text(json.dumps(record))
        given = [f"{k}={v}" for k, v in {"dvae_weights": dvae, "clip_weights": clip, key: bad}.items()]
        assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", *given]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"megadalle export: {bad}: ") and err.count("\n") == 1, err
        assert f"its tensors do not fit the model that {bad.with_suffix('.json')} describes" in err
        assert not (tmp_path / "model").exists()


class TensorsRead:
    """A safetensors handle that notes, in `read`, the file of each tensor read from it."""

    def __init__(self, file, tensors, read: list):
        self.file, self.tensors, self.read = file, tensors, read

    def __enter__(self):
        self.tensors.__enter__()
        return self

    def __exit__(self, *exc):
        return self.tensors.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.tensors, name)

    def get_tensor(self, name):
        self.read.append(self.file)
        return self.tensors.get_tensor(name)


def test_export_checks_the_clip_and_an_unrecorded_dvae_from_their_headers(trained, tmp_path, monkeypatch):
    """export read the whole CLIP (and a dVAE that no record compares) only to check that generate would load it,
    then copied the file: the check of their headers (names and shapes) is that check, no tensor read."""
    from megadalle.weights import load

    run, _, dvae, clip = trained
    real, read = load._open, []
    monkeypatch.setattr(load, "_open", lambda file, *args: TensorsRead(file, real(file, *args), read))
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    assert {dvae, clip}.isdisjoint(read)
    monkeypatch.undo()
    assert megadalle.load_pipeline(folder).clip is not None


def test_an_export_into_a_folder_another_export_is_writing_is_refused(trained, tmp_path, capsys):
    """Two exports into one folder at once both said they wrote it, leaving one's bundle.json (its run, its EMA) over
    the other's Transformer, which loaded without a word."""
    from megadalle.folder_lock import LOCK, output_lock

    run, _, dvae, _ = trained
    folder = tmp_path / "model"
    with output_lock(folder, "export"):  # another export, from its lock to its manifest
        assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}"]) == 2
    assert f"output={folder} is in use by an export (host " in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == [LOCK]  # the holder's lock, left to it
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}"]) == 0  # once it has ended
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.json", "dvae.json", "dvae.safetensors",
                                                       "tokenizer.model", "transformer"]


def test_the_same_export_again_leaves_the_folder_as_it_is(trained, tmp_path, capsys):
    """A pipeline's rerun of `export` rewrote the folder with the same contents and new file times, and a stopped
    generate of it could no longer continue (it records the files behind its weights by size and time)."""
    run, _, dvae, clip = trained
    command = ["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={dvae}", f"clip_weights={clip}"]
    assert main(command) == 0
    times = {p: p.stat().st_mtime_ns for p in (tmp_path / "model").rglob("*")}
    capsys.readouterr()
    assert main(command) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "model").rglob("*")} == times
    err = capsys.readouterr().err
    assert err.startswith(f"[export] {tmp_path / 'model'}: done already (the same export of step_") and \
        err.endswith("): nothing written\n")
    for other in ("dtype=fp32", "clip_weights=null"):  # another export: the folder is written again
        assert main([*command, other]) == 0
        assert "wrote model folder" in capsys.readouterr().err
    assert main(command) == 0 and "wrote model folder" in capsys.readouterr().err
    assert main(command) == 0 and "done already" in capsys.readouterr().err
    os.utime(dvae, ns=(dvae.stat().st_atime_ns, dvae.stat().st_mtime_ns + 10**9))  # a piece rewritten since
    assert main(command) == 0 and "wrote model folder" in capsys.readouterr().err


def test_the_same_export_again_rewrites_a_folder_damaged_since(trained, tmp_path, capsys):
    """Every reader of a damaged weights file advises to re-export: the same command must then write the folder."""
    run, _, dvae, _ = trained
    command = ["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={dvae}"]
    assert main(command) == 0
    shard = next((tmp_path / "model" / "transformer").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])  # a copy cut short
    capsys.readouterr()
    assert main(command) == 0 and "wrote model folder" in capsys.readouterr().err
    assert megadalle.load_pipeline(tmp_path / "model") is not None
