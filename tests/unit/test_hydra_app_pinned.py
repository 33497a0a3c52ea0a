"""How `megadalle <verb> ARGS` is read when hydra's runner takes it (`-m`, `--cfg`, `--info`...): which words are
hydra's flags and their values, which are overrides, and what `--cfg job` prints. Expectations written by hand."""
import pytest

from megadalle.cli import main
from megadalle.hydra_app import flag_value, hydra_argv, is_multirun, split_flags


def test_flags_take_their_values_and_every_other_word_is_an_override():
    args = ["-m", "a=1", "--info", "b=2", "--config-dir", "d", "--cfg", "job", "c=3", "--info", "plugins"]
    assert split_flags(args) == (["-m", "--info", "--config-dir", "d", "--cfg", "job", "--info", "plugins"],
                                 ["a=1", "b=2", "c=3"])


def test_a_flags_value_is_read_after_it_or_after_its_equals_sign():
    assert flag_value(["--config-dir=/x", "-m"], "--config-dir", "-cd") == "/x"
    assert flag_value(["-m", "-cd", "/y"], "--config-dir", "-cd") == "/y"
    assert flag_value(["-m", "--config-dir"], "--config-dir", "-cd") is None
    assert flag_value(["-m"], "--config-dir", "-cd") is None
    assert is_multirun(["--multirun"]) and is_multirun(["-m"]) and not is_multirun(["--cfg", "job"])


def test_hydra_reads_the_overrides_first_then_its_flags():
    """Hydra's parser takes its overrides as one run of words before the flags; megadalle writes each job's record
    itself unless the command line sets hydra.output_subdir (with or without `+`)."""
    assert hydra_argv("plan", ["gpus=1", "-m", "model=tiny"]) == [
        "megadalle plan", "gpus=1", "model=tiny", "hydra.job.name=plan", "hydra.output_subdir=null", "-m"]
    assert hydra_argv("plan", ["++hydra.output_subdir=.h", "-m"]) == [
        "megadalle plan", "++hydra.output_subdir=.h", "hydra.job.name=plan", "-m"]


def test_cfg_job_resolves_on_request_and_prints_the_whole_config_for_the_global_package(capsys, tmp_path):
    given = ["weights=x", "prompt=red", f"out_dir={tmp_path}"]
    assert main(["generate", "--cfg", "job", "-p", "_global_", *given]) == 0
    whole = capsys.readouterr().out
    assert whole.startswith("seed: 0\n") and f"\nout_dir: {tmp_path}\n" in whole and "\nprompt: red\n" in whole
    assert "\noutput: ${out_dir}/generate\n" in whole
    assert main(["generate", "--cfg", "job", "--resolve", *given]) == 0
    assert f"\noutput: {tmp_path}/generate\n" in capsys.readouterr().out


def test_cfg_job_and_a_sweep_take_the_primary_config_that_config_name_chooses(capsys, tmp_path):
    """`--config-dir D --config-name mine`: the job runs D/mine.yaml; `--cfg job` and `-m` failed in "Cannot find
    primary config 'mine'" (their compose looked for it in conf/ alone) while the plain run ran it."""
    (tmp_path / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\ntrainer:\n  lr: 0.123\n"
                                        "data:\n  tokenizer: tok.model\n")
    assert main(["train", "--cfg", "job", "-p", "trainer.lr", "--config-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "0.00045\n"  # conf/train.yaml's trainer=default
    assert main(["train", "--cfg", "job", "-p", "trainer.lr", "--config-dir", str(tmp_path), "--config-name",
                 "mine"]) == 0
    assert capsys.readouterr().out == "0.123\n"
    assert main(["train", "--cfg", "job", "-p", "data.tokenizer", "--config-dir", str(tmp_path), "--config-name",
                 "mine"]) == 0
    assert capsys.readouterr().out == "tok.model\n"  # given by mine.yaml: not taken back to `???`
    (tmp_path / "big.yaml").write_text("defaults:\n  - plan\n  - _self_\ngpu_mem_gb: 80\n")
    assert main(["plan", "-m", "--config-dir", str(tmp_path), "--config-name", "big", "model=tiny", "gpus=8,16",
                 f"out_dir={tmp_path / 'out'}"]) == 0
    overrides = (tmp_path / "out" / "multirun" / "plan" / "1" / ".hydra" / "overrides.yaml").read_text()
    assert "gpus=16" in overrides


@pytest.mark.parametrize("args, meant", [
    (["--input", "x", "output=y"], "--input x: megadalle's keys are set as key=value, without dashes: write input=x"),
    (["output=y", "--input=x"], "--input=x: megadalle's keys are set as key=value, without dashes: write input=x"),
    (["--image-size", "32"], "--image-size 32: megadalle's keys are set as key=value, without dashes: write "
                             "image_size=32"),
    (["-x"], "-x: megadalle's keys are set as key=value, without dashes: write x=VALUE"),
])
def test_a_key_typed_as_a_flag_is_named_with_the_override_it_meant(capsys, args, meant):
    """`--input x` was refused as the bare word `x`, `--input=x` with argparse's usage and "unrecognized arguments"."""
    assert main(["prepare", *args]) == 2
    assert capsys.readouterr().err == f"megadalle prepare: {meant}\n"


def test_hydras_flags_and_their_abbreviations_stay_flags(capsys):
    assert main(["plan", "model=tiny", "gpus=1", "--cfg", "job", "--res"]) == 0
    assert "gpus: 1" in capsys.readouterr().out
