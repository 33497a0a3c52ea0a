"""A CLIP trained with another tokenizer of the same size is refused, naming both tokenizers (hunt L1): it read the
prompt's ids as other words and reranked by noise with exit code 0. train-clip records its tokenizer beside the
weights it exports; a CLIP exported before that record is read with a warning."""
from __future__ import annotations

import json

from megadalle.cli import main
from megadalle.data.digest import sha256
from megadalle.sampling import clip_record
from megadalle.train.clip import train_clip
from megadalle.weights import config_path
from tests.sample.clip_run import clip_config
from tests.tiny_models import tokenizer_model, trained_with, write_tiny_models


def generate(models, *keys: str, out: str = "out") -> int:
    return main(["generate", f"weights={models / 'model.safetensors'}", "prompt=a red circle", "n=2", "keep=1",
                 f"output={models / out}", *keys])


def test_train_clip_records_its_tokenizer_and_generate_refuses_another(tmp_path, capsys):
    """The hunt's case: a CLIP trained with tokenizer A reranking for a Transformer whose tokenizer B has as many
    pieces, given as its exported weights or as its run directory."""
    clip = train_clip(clip_config(tmp_path / "a", "trainer.steps=2"))
    tok_a = tmp_path / "a" / "tok.model"
    assert json.loads(config_path(clip).read_text())["tokenizer"] == {"sha256": sha256(tok_a), "path": str(tok_a)}
    models = tmp_path / "b"
    models.mkdir()
    write_tiny_models(models)
    tok_b = models / "tokenizer.model"
    capsys.readouterr()
    run = tmp_path / "a" / "run"
    for i, (given, record) in enumerate(((clip, config_path(clip)), (run, run / "run.json"))):
        assert generate(models, f"clip_weights={given}") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"megadalle generate: clip_weights={given}: a CLIP trained with another tokenizer than "
                              f"tokenizer={tok_b} (sha256 {sha256(tok_b)[:12]}; {record} records {tok_a}, sha256 "
                              f"{sha256(tok_a)[:12]})") and err.count("\n") == 1
        assert not (models / "out").exists()
        assert generate(models, f"clip_weights={given}", f"tokenizer={tok_a}", out=f"own{i}") == 0  # its own: taken
        capsys.readouterr()


def test_a_clip_exported_before_the_record_is_read_with_a_warning(tmp_path, capsys):
    write_tiny_models(tmp_path)
    meta = config_path(tmp_path / "clip.safetensors")
    record = json.loads(meta.read_text())
    del record[clip_record.TOKENIZER]
    meta.write_text(json.dumps(record))
    assert generate(tmp_path) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "records no tokenizer" in line]
    assert warning == [f"[megadalle] warning: clip_weights={tmp_path / 'clip.safetensors'} records no tokenizer "
                       "(exported before train-clip recorded it): not checked against "
                       f"tokenizer={tmp_path / 'tokenizer.model'}; a CLIP trained with another tokenizer ranks the "
                       "samples by noise"]


def test_the_warning_is_said_only_once_the_run_passed_every_check(tmp_path, capsys):
    """The warning was printed at once, and a refusal after it (a prompt the tokenizer reads nothing of, a wrong
    dVAE) left two lines for one run that did not start."""
    write_tiny_models(tmp_path)
    meta = config_path(tmp_path / "clip.safetensors")
    record = json.loads(meta.read_text())
    del record[clip_record.TOKENIZER]
    meta.write_text(json.dumps(record))
    assert main(["generate", f"weights={tmp_path / 'model.safetensors'}", 'prompt="\u200b"', "n=2", "keep=1",
                 f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("megadalle generate: prompt='\\u200b': the tokenizer reads nothing of it") and \
        err.count("\n") == 1, err


def test_load_pipeline_refuses_a_clip_of_another_tokenizer(tmp_path):
    import pytest

    import megadalle
    from megadalle.sampling.compatible import IncompatibleModels

    write_tiny_models(tmp_path)
    other = tmp_path / "other.model"
    tokenizer_model(other, ["a green star in the middle", "two yellow lines"] * 20)
    trained_with(tmp_path / "clip.safetensors", other)
    with pytest.raises(IncompatibleModels, match=f"records {other}, sha256 {sha256(other)[:12]}"):
        megadalle.load_pipeline(tmp_path / "model.safetensors")
    assert megadalle.load_pipeline(tmp_path / "model.safetensors", rerank=False).clip is None


def test_export_of_a_clip_run_records_its_tokenizer(tmp_path):
    """`megadalle export run=<train-clip run>` wrote the weights without the record, so its CLIP was read with the
    warning and never checked."""
    clip = train_clip(clip_config(tmp_path / "a", "trainer.steps=2"))
    tok_a = tmp_path / "a" / "tok.model"
    out = tmp_path / "again.safetensors"
    assert main(["export", f"run={tmp_path / 'a' / 'run'}", f"output={out}"]) == 0
    assert json.loads(config_path(out).read_text())["tokenizer"] == json.loads(config_path(clip).read_text())[
        "tokenizer"] == {"sha256": sha256(tok_a), "path": str(tok_a)}
