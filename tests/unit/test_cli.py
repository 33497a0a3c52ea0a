"""The `megadalle` entry point: help lists every verb, verb help shows its config, errors exit non-zero."""
import subprocess
import sys

from megadalle.cli import VERBS, main

EXPECTED_VERBS = ["prepare", "tokenizer", "train-dvae", "encode", "train-clip", "train", "export", "generate", "evaluate", "plan", "demo"]


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in EXPECTED_VERBS:
        assert f"  {verb} " in out
    assert list(VERBS) == EXPECTED_VERBS


def test_every_verb_has_a_config_and_a_stage():
    from megadalle.cli import resolve
    from megadalle.config.compose import compose

    for verb in EXPECTED_VERBS:
        compose(verb)
        assert callable(resolve(verb)), verb


def test_verb_help_shows_its_config(capsys):
    assert main(["plan", "--help"]) == 0
    out = capsys.readouterr().out
    assert "gpu_mem_gb:" in out and "n_layers:" in out


def test_unknown_verb_and_bad_override_exit_non_zero(capsys):
    assert main(["paint"]) == 2
    assert "unknown verb 'paint'" in capsys.readouterr().err
    assert main(["plan", "model=huge"]) == 2
    assert "model/huge" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "megadalle", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train-dvae" in out


def test_local_rank_from_the_deepspeed_launcher_never_reaches_hydra(capsys):
    assert main(["plan", "model=tiny", "gpus=1", "gpu_mem_gb=8", "--local_rank=3"]) == 0
    assert "suggested layout" in capsys.readouterr().out


def test_user_errors_print_one_line(monkeypatch, capsys):
    from megadalle import cli
    from megadalle.train.checkpoint import CheckpointError

    def refuse(cfg):
        raise CheckpointError("outputs/run/checkpoints/step_00000004: manifest missing")

    monkeypatch.setattr(cli, "resolve", lambda verb: refuse)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "megadalle plan: outputs/run/checkpoints/step_00000004: manifest missing"
