"""Every command line's keys are checked before hydra sees them, `-m` and `--cfg` included, and a misspelt key is
answered with the declared key nearest in spelling: one line and exit code 2, never hydra's runner's several lines,
its exit code 1 and its advice to add the misspelt key with `+`."""
import os
import subprocess
import sys

import pytest

from megadalle.cli import main
from megadalle.config.compose import compose


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv", [["plan", "-m", "trainer.lrr=1,2"], ["plan", "--cfg", "job", "trainer.lrr=1"],
                                  ["plan", "-m", "model=tiny", "modle=x"], ["plan", "-m", "model=tiny", "prompt=it's"],
                                  ["plan", "-m", "trainer.lr=abc,1"], ["plan", "--cfg", "job", "~gpus"]])
def test_hydras_runner_gets_the_plain_runs_checks_and_its_errors_are_one_line(argv, capsys):
    assert main(argv) == 2
    err = one_line(capsys)
    assert err.startswith("megadalle plan: ") and "HYDRA_FULL_ERROR" not in err and "+trainer" not in err
    assert "HYDRA_FULL_ERROR" not in os.environ  # raised errors are asked of hydra for its run alone


def test_a_misspelt_key_under_minus_m_exits_2_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "megadalle", "plan", "-m", "trainer.lrr=1,2"],
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, "megadalle plan: trainer.lrr=1,2: megadalle plan has no key "
                                                 "trainer.lrr; did you mean trainer.lr? (megadalle plan --help lists "
                                                 "the keys)\n")


def test_a_crash_in_a_sweep_job_keeps_its_traceback(monkeypatch, tmp_path):
    """Only hydra's own errors are one line: a stage's bug is no user error."""
    from megadalle import cli

    def crash(verb, cfg):
        raise ValueError("a bug in the stage")

    monkeypatch.setattr(cli, "execute", crash)
    with pytest.raises(ValueError, match="a bug in the stage"):
        main(["plan", "-m", "gpus=8,16", f"out_dir={tmp_path}"])


@pytest.mark.parametrize("argv,nearest", [
    (["plan", "trainer.lrr=1"], "trainer.lr"), (["generate", "weights=model", "promt=hi"], "prompt"),
    (["generate", "weights=model", "prompt=x", "topk=3"], "top_k"), (["train", "modle=1b"], "model"),
    (["plan", "gpu=8"], "gpus"), (["plan", "deepspeed.zero_stag=2"], "deepspeed.zero_stage"),
    (["train", "-m", "trainer.lrr=1,2"], "trainer.lr")])
def test_a_misspelt_key_is_answered_with_the_nearest_declared_key(argv, nearest, capsys):
    assert main(argv) == 2
    key = argv[-1].partition("=")[0]
    assert one_line(capsys) == f"megadalle {argv[0]}: {argv[-1]}: megadalle {argv[0]} has no key {key}; did you mean " \
                               f"{nearest}? (megadalle {argv[0]} --help lists the keys)\n"


def test_keys_below_an_open_node_still_compose():
    """A list's index and a `dict` field's keys are not the schema's to name."""
    assert list(compose("index", ["dir=x", "require.0=jpg"]).require) == ["jpg"]
    cfg = compose("plan", ["+deepspeed.extra.foo=1", "~deepspeed.extra.foo", "hydra.job.chdir=false"])
    assert "foo" not in cfg.deepspeed.extra


def test_a_group_of_other_verbs_is_no_group_of_this_one(capsys):
    """`generate clip=...` was checked against conf/clip/ ("choose one of base, tiny"), and `clip=base` then failed
    in hydra ("No match in the defaults list"): generate's reranker is clip_model."""
    for argv in (["generate", "prompt=x", "clip=base"], ["generate", "prompt=x", "clip=open_clip:ViT-B-32"],
                 ["evaluate", "clip=open_clip:ViT-B-32"]):
        verb, item = argv[0], argv[-1]
        assert main([*argv, "weights=model"]) == 2
        assert one_line(capsys) == f"megadalle {verb}: {item}: megadalle {verb} has no key clip (a config group of " \
                                   f"train-clip, not of {verb}); did you mean clip_model? (megadalle {verb} --help " \
                                   "lists the keys)\n"
    assert main(["encode", "dvae=tiny"]) == 2
    assert "has no key dvae (a config group of train-dvae, not of encode); did you mean dvae_weights?" in one_line(capsys)
    assert main(["generate", "weights=model", "prompt=x", "model=12b"]) == 2
    err = one_line(capsys)
    assert "has no key model (a config group of plan, train, not of generate)" in err and "did you mean" not in err


@pytest.mark.parametrize("item", ["~gpus", "~seed", "~out_dir", "~trainer.lr", "~gpus=64"])
def test_deleting_a_declared_key_is_refused(item, capsys):
    """`~gpus` composed without the key, and the stage ran on its dataclass's built-in value in silence."""
    assert main(["plan", item]) == 2
    key = item.lstrip("~").partition("=")[0]
    assert one_line(capsys) == f"megadalle plan: {item}: a key of megadalle plan cannot be deleted (the stage would " \
                               f"take a built-in value in silence, or hydra refuse it); set it instead: {key}=VALUE\n"


def test_an_unset_environment_variable_is_named_with_a_default_to_copy(monkeypatch, capsys):
    """`${oc.env:SCRATCH}` unset was answered with the advice to keep `${` as text, which no run directory means."""
    import shlex

    monkeypatch.delenv("MEGADALLE_UNSET_VARIABLE", raising=False)
    assert main(["plan", "out_dir=${oc.env:MEGADALLE_UNSET_VARIABLE}/runs"]) == 2
    err = one_line(capsys)
    assert err.startswith("megadalle plan: out_dir='${oc.env:MEGADALLE_UNSET_VARIABLE}/runs': environment variable "
                          "MEGADALLE_UNSET_VARIABLE is not set; set it (export MEGADALLE_UNSET_VARIABLE=...), or give "
                          "it a default: ")
    suggested = shlex.split(err.split("give it a default: ")[1].split("; to keep it as text")[0])[0]
    assert compose("plan", [suggested]).out_dir == "DEFAULT/runs"


def test_an_unknown_verb_is_answered_with_the_nearest_verb(capsys):
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.startswith("megadalle: unknown verb 'trian'; did you mean train?\n")
