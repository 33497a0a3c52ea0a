"""`ema=auto`, the default of export, generate and evaluate: a run trained with an EMA ships and samples its EMA (the
weights its validation scored, as train-dvae and train-clip export theirs), a run without one its live weights;
`ema=true` insists on the EMA, `ema=false` takes the live weights."""
from __future__ import annotations

import json

import pytest

import megadalle.evaluate
import megadalle.sample
from megadalle.cli import main
from megadalle.config import ConfigError
from megadalle.config.ema import check_ema, ema_choice
from megadalle.train.consolidate import load_run
from megadalle.weights import load_weights


def exported(run, output, capsys, *keys: str) -> tuple[dict, str]:
    """The Transformer `export run=RUN output=OUTPUT KEYS` wrote (fp32: the EMA and the live weights of two tiny
    updates may round to one bf16), and the line it said so in."""
    assert main(["export", f"run={run}", f"output={output}", "dtype=fp32", *keys]) == 0
    return load_weights(output, "transformer")[0], capsys.readouterr().err


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_export_ships_the_ema_of_a_run_that_trained_one(trained_ema, tmp_path, capsys):
    """Train said `val/ metrics and media are of the EMA weights (trainer.ema=...), those export ships`, while export
    wrote the live weights unless told ema=true, and said only `wrote X (bf16)`."""
    run, _, dvae, clip = trained_ema
    auto, said = exported(run, tmp_path / "auto.safetensors", capsys)
    ema, _ = exported(run, tmp_path / "ema.safetensors", capsys, "ema=true")
    live, said_live = exported(run, tmp_path / "live.safetensors", capsys, "ema=false")
    assert same(auto, ema) and not same(auto, live)
    assert "(fp32, the EMA weights of step_00000002)" in said
    assert "(fp32, the live weights of step_00000002)" in said_live
    folder = tmp_path / "model"
    assert main(["export", f"run={run}", f"output={folder}", f"dvae_weights={dvae}", f"clip_weights={clip}"]) == 0
    assert f"wrote model folder {folder} (bf16, the EMA weights of step_00000002)" in capsys.readouterr().err
    assert json.loads((folder / "bundle.json").read_text())["ema"] is True


def test_a_run_without_an_ema_ships_its_live_weights_and_refuses_ema_true(trained, tmp_path, capsys):
    run, _, dvae, _ = trained
    auto, said = exported(run, tmp_path / "auto.safetensors", capsys)
    live, _ = exported(run, tmp_path / "live.safetensors", capsys, "ema=false")
    assert same(auto, live) and "(fp32, the live weights of step_00000002)" in said
    assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={dvae}"]) == 0
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())["ema"] is False
    for verb in (["export", f"output={tmp_path / 'ema.safetensors'}"],
                 ["generate", "prompt=red cat", f"dvae_weights={dvae}", "rerank=false", f"output={tmp_path / 'g'}"]):
        key = "run" if verb[0] == "export" else "weights"
        assert main([*verb, f"{key}={run}", "ema=true"]) == 2
        assert f"ema=true: {run} trained without an EMA" in capsys.readouterr().err
    assert not (tmp_path / "ema.safetensors").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize("verb, module", [("generate", megadalle.sample), ("evaluate", megadalle.evaluate)])
def test_sampling_a_run_directory_reads_its_ema(verb, module, trained_ema, tmp_path, monkeypatch):
    """generate and evaluate weights=RUN sampled a run's live weights unless told ema=true."""
    run, _, dvae, clip = trained_ema
    sampled, real = [], getattr(module, verb)
    monkeypatch.setattr(module, verb, lambda model, *a, **k: sampled.append(model.state_dict()) or real(model, *a, **k))
    captions = tmp_path / "captions.txt"
    captions.write_text("red cat\n")
    keys = {"generate": ["prompt=red cat", "n=1", "keep=1"],
            "evaluate": [f"captions={captions}", "n=1", "fid=false"]}[verb]
    for ema in ("auto", "false"):
        args = [verb, f"weights={run}", f"dvae_weights={dvae}", f"clip_weights={clip}", "device=cpu",
                f"output={tmp_path / ema}", *keys] + ([] if ema == "auto" else [f"ema={ema}"])
        assert main(args) == 0
    expected = {ema: load_run(run, ema=ema)[0].state_dict() for ema in (True, False)}
    assert same(sampled[0], expected[True]) and same(sampled[1], expected[False])


@pytest.mark.parametrize("verb", ["export", "generate", "evaluate"])
def test_ema_takes_auto_true_or_false_and_refuses_anything_else_by_name(verb, trained, tmp_path, capsys):
    run, _, dvae, _ = trained
    keys = {"export": [f"run={run}", f"output={tmp_path / 'x.safetensors'}"],
            "generate": [f"weights={run}", "prompt=red cat", f"output={tmp_path / 'g'}"],
            "evaluate": [f"weights={run}", f"captions={dvae}", "fid=false", f"output={tmp_path / 'e'}"]}[verb]
    assert main([verb, *keys, "ema=sometimes"]) == 2
    err = capsys.readouterr().err
    assert "ema='sometimes': expected one of auto, true, false" in err and len(err.strip().splitlines()) == 1


def test_a_sweeps_typed_booleans_are_read_as_the_words():
    """`-m ema=true,false` reaches the schema as True and False (hydra types a sweep's values)."""
    assert [ema_choice(v) for v in ("auto", "true", "false", "True", "False")] == [None, True, False, True, False]
    with pytest.raises(ConfigError, match=r"^ema='yes': expected one of auto, true, false$"):
        check_ema("yes")
