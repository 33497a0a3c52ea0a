"""The `megadalle` entry point: help lists every verb, verb help shows its config, errors exit non-zero."""
import json
import re
import shlex
import subprocess
import sys

import pytest

from megadalle.cli import VERBS, main
from tests.unit.helpers import help_lines, line_of

EXPECTED_VERBS = ["prepare", "index", "tokenizer", "train-dvae", "import-dvae", "encode", "train-clip", "train", "export",
                  "generate", "evaluate", "plan", "demo"]


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


@pytest.mark.parametrize("asked", [["help", "train"], ["--help", "train"], ["-h", "train", "model=12b"]])
def test_help_of_a_verb_asked_first_is_the_verbs(capsys, asked):
    """`megadalle help train`, as `git help commit`: it printed the list of verbs."""
    assert main(asked) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"megadalle train: {VERBS['train'].summary}") and "model" in out
    if "model=12b" in asked:
        assert "n_layers: 64" in out


def test_version_is_the_installed_packages(capsys):
    from importlib import metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"megadalle {metadata.version('megadalle')}\n"


def test_verb_help_applies_overrides_before_printing(capsys):
    tiny = help_lines(capsys, ["train", "--help"])
    big = help_lines(capsys, ["train", "model=12b", "trainer.lr=0.001", "--help"])
    assert line_of(tiny, "n_layers:").split("#")[0].strip() == "n_layers: 4"
    assert line_of(big, "n_layers:").split("#")[0].strip() == "n_layers: 64"
    assert line_of(big, "lr:").startswith("  lr: 0.001 ")
    assert line_of(big, "tokenizer:").startswith("  tokenizer: ???")


def test_verb_help_shows_each_fields_docstring(capsys):
    lines = help_lines(capsys, ["train", "--help"])
    assert "# Residual width; must equal n_heads * head_dim." in line_of(lines, "d_model:")
    assert "# Optimizer updates to train for" in line_of(lines, "steps:")
    assert "# auto: the newest complete checkpoint" in line_of(lines, "resume:")  # verb-level key (RunConfig)
    plan = help_lines(capsys, ["plan", "--help"])
    assert "# Memory of one GPU in GB" in line_of(plan, "gpu_mem_gb:")
    dvae = help_lines(capsys, ["train-dvae", "--help"])
    assert "#" in line_of(dvae, "kl_weight:")  # nested dataclass (dvae.objective)


def test_the_verb_keys_once_left_to_yaml_comments_have_a_schema_and_its_help(capsys):
    """train's sample-grid keys and train-clip's `weights` had no dataclass: untyped, and documented by the comment
    beside them in the YAML alone."""
    lines = help_lines(capsys, ["train", "--help"])
    assert "# Fixed captions in each sample grid" in line_of(lines, "media_captions:")
    assert "# Samples drawn per caption in each sample grid" in line_of(lines, "media_samples:")
    assert "# The dVAE that decodes the sample grids" in line_of(lines, "dvae_weights:")
    clip = help_lines(capsys, ["train-clip", "--help"])
    assert "# Where the trained CLIP is exported for users" in line_of(clip, "weights:")


def test_verb_help_lists_each_groups_options(capsys):
    lines = help_lines(capsys, ["train", "model=small", "--help"])
    assert line_of(lines, "model ").split() == ["model", "12b", "1b", "[small]", "tiny"]
    assert line_of(lines, "deepspeed ").split() == ["deepspeed", "pipe", "[zero1]", "zero2", "zero3"]
    groups = lines[lines.index("groups (group=option; [chosen]):") + 1:lines.index("", 3)]
    assert len(groups) == 5 and not any("schema" in line for line in groups)
    assert line_of(lines, "data ").split() == ["data", "[tokens]", "synthetic"]  # images are the dVAE's and CLIP's
    for verb in ("train-dvae", "train-clip"):  # they listed synthetic and tokens, which they refuse
        assert line_of(help_lines(capsys, [verb, "--help"]), "data ").split() == ["data", "[images]"]


def test_a_required_key_given_under_another_groups_name_is_pointed_at(capsys):
    """`train-clip data.tokenizer=tok.model` (the Transformer's key) said only that `tokenizer` was not set."""
    assert main(["train-clip", "data.shards=x", "data.tokenizer=tok.model"]) == 2
    assert capsys.readouterr().err == (
        "megadalle train-clip: required key not set: tokenizer (give tokenizer=... on the command line; "
        "data.tokenizer is set, but this verb reads tokenizer)\n")


def test_unknown_verb_and_bad_override_exit_non_zero(capsys):
    assert main(["paint"]) == 2
    assert "unknown verb 'paint'" in capsys.readouterr().err
    assert main(["plan", "model=huge"]) == 2
    assert capsys.readouterr().err == \
        "megadalle plan: model=huge: no such model config; choose one of 12b, 1b, small, tiny\n"
    assert main(["plan", "model=huge", "--help"]) == 2
    assert "choose one of 12b, 1b, small, tiny" in capsys.readouterr().err
    for argv in (["plan", "model.n_layerz=3"], ["plan", "model.n_layerz=3", "--help"]):  # the same line
        assert main(argv) == 2
        assert capsys.readouterr().err == "megadalle plan: model.n_layerz=3: megadalle plan has no key model.n_layerz; " \
                                          "did you mean model.n_layers? (megadalle plan --help lists the keys)\n"


def test_a_group_cannot_be_left_out(capsys):
    for argv in (["train", "model=null"], ["train", "trainer=null"], ["train", "~model"], ["plan", "-m", "model=tiny,null"],
                 ["train", "model=null", "--help"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a config group cannot be left out; choose a " in err, err
    assert main(["train", "logger=null"]) == 2
    assert capsys.readouterr().err == \
        "megadalle train: logger=null: a config group cannot be left out; choose a logger config: none, wandb\n"


def test_a_data_config_the_verb_cannot_read_is_named_as_such(capsys):
    """`train data=images` used to fail on data.tokenizer=null, `train-dvae data=tokens` on a required tokenizer."""
    assert main(["train", "data=images", "data.shards=x"]) == 2
    assert capsys.readouterr().err == "megadalle train: data=images: train-dvae and train-clip read this data config, " \
                                      "not train; train takes data=tokens or data=synthetic\n"
    for argv in (["train-dvae", "data=tokens"], ["train-clip", "data=synthetic", "--help"], ["train", "-m", "data=tokens,images"]):
        assert main(argv) == 2, argv
        assert " this data config, not " in capsys.readouterr().err


def test_errors_of_composing_are_one_line(monkeypatch, capsys):
    from omegaconf.errors import ConfigAttributeError

    import megadalle.config.compose

    for error in (ConfigAttributeError("Key 'model' is not in struct"), ValueError("Config group override must be")):
        def compose(verb, overrides, error=error):
            raise error
        monkeypatch.setattr(megadalle.config.compose, "compose", compose)  # the CLI imports it when it composes
        assert main(["train"]) == 2
        assert capsys.readouterr().err == f"megadalle train: {error}\n"


def test_a_groups_key_given_at_the_top_is_named_with_its_group(capsys):
    """`train tokenizer=` (train-clip's key) was told only that train has no key tokenizer."""
    for argv, key in ((["train", "tokenizer=tok.model"], "data.tokenizer"), (["train", "lr=3"], "trainer.lr")):
        assert main(argv) == 2
        assert f"has no key {argv[1].partition('=')[0]}; did you mean {key}?" in capsys.readouterr().err


def test_plus_adds_no_key_that_no_schema_declares(capsys):
    from megadalle.config.compose import compose

    assert main(["train", "+trainer.lrr=1"]) == 2  # composed, trained, and the key was ignored
    assert capsys.readouterr().err == "megadalle train: +trainer.lrr=1: megadalle train has no key trainer.lrr and " \
                                      "`+` cannot add one; did you mean trainer.lr? (megadalle train --help lists the keys)\n"
    for argv in (["train", "+foo=1"], ["train", "++foo=1"], ["plan", "+logger=none"], ["plan", "-m", "+seeds=1,2"],
                 ["train-dvae", "+dvae.objective.kl_weigth=1"], ["train", "+trainer.lrr=1", "--help"]):
        assert main(argv) == 2, argv
        assert "`+` cannot add one" in capsys.readouterr().err
    cfg = compose("train", ["+deepspeed.extra.zero_optimization.sub_group_size=7", "++trainer.lr=0.5", "+hydra.job.chdir=false"])
    assert cfg.deepspeed.extra.zero_optimization.sub_group_size == 7 and cfg.trainer.lr == 0.5  # an open node; a declared key


def test_values_hydra_cannot_read_are_refused_with_their_quoted_form(capsys):
    from megadalle.config.compose import compose

    for prompt in ("a cat, sitting on a mat", "the dog's ball", "café au lait", "photo: a [red] cat", 'he said "hi"'):
        assert main(["generate", "weights=model", f"prompt={prompt}"]) == 2
        err = capsys.readouterr().err
        suggested = shlex.split(re.split("quote it: |as text: ", err)[1].split(", or add --multirun")[0])[0]
        assert err.count("\n") == 1 and suggested.startswith("prompt=")
        assert compose("generate", ["weights=model", suggested]).prompt == prompt  # the fix given works as given
    assert main(["plan", "model=tiny,small"]) == 2
    assert "add --multirun to sweep" in capsys.readouterr().err


def test_a_word_without_key_is_refused_as_such_with_the_key_it_likely_meant(capsys):
    """`generate weights=model "a red circle"` (no prompt=) was advised `quote it: a red circle`, which sets no key
    either; an item without `=` is said to need key=value, and generate's fix is a prompt that reads as typed."""
    from megadalle.config.compose import compose

    assert main(["generate", "weights=model", "a red circle"]) == 2
    err = capsys.readouterr().err
    assert err == "megadalle generate: a red circle: expected key=value; for the prompt, write " \
                  "'prompt=\"a red circle\"'\n"
    suggested = shlex.split(err.split("write ")[1])[0]
    assert compose("generate", ["weights=model", suggested]).prompt == "a red circle"
    for argv in (["plan", "tiny"], ["plan", "+foo"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"megadalle plan: {argv[1]}: expected key=value (megadalle plan --help " \
                                          "lists the keys)\n"


def test_a_prompt_whose_shell_quotes_were_lost_is_advised_whole(capsys):
    """`generate weights=model a red circle` (unquoted: three words) was advised 'prompt="a"', which draws "a"; the
    consecutive words without `=` are one prompt, as typed."""
    from megadalle.config.compose import compose

    assert main(["generate", "weights=model", "a", "red", "circle", "top_p=0.5", "blue"]) == 2
    err = capsys.readouterr().err
    assert err == "megadalle generate: a red circle: expected key=value; for the prompt, write " \
                  "'prompt=\"a red circle\"'\n"
    suggested = shlex.split(err.split("write ")[1])[0]
    assert compose("generate", ["weights=model", suggested]).prompt == "a red circle"


@pytest.mark.parametrize("typed", ["a red circle", "a, red circle"])
def test_a_prompt_key_before_the_words_the_shell_split_off_is_part_of_the_prompt_advised(capsys, typed):
    """`generate weights=model prompt=a red circle` (unquoted) was advised 'prompt="red circle"', losing "a", and
    `prompt=a, red circle` 'prompt="a,"'; the prompt= value is the first words of the prompt advised."""
    from megadalle.config.compose import compose

    assert main(["generate", "weights=model", *f"prompt={typed}".split(" "), "top_p=0.5"]) == 2
    err = capsys.readouterr().err
    assert err == f"megadalle generate: red circle: expected key=value; for the prompt, write 'prompt=\"{typed}\"'\n"
    suggested = shlex.split(err.split("write ")[1])[0]
    assert compose("generate", ["weights=model", suggested]).prompt == typed


@pytest.mark.parametrize("typed", [['prompt="a red"', "circle"], ["+prompt=a", "red", "circle"],
                                   ["++prompt=a", "red", "circle"]])
def test_a_quoted_or_added_prompt_key_before_the_words_is_advised_as_the_prompt_meant(capsys, typed):
    """`'prompt="a red"' circle` was advised 'prompt="\\"a red\\" circle"' (its quotes inside the prompt), and
    `+prompt=a red circle` 'prompt="red circle"' (the words only: `+prompt` was not taken for the prompt key)."""
    from megadalle.config.compose import compose

    assert main(["generate", "weights=model", *typed]) == 2
    err = capsys.readouterr().err
    assert err == f"megadalle generate: {' '.join(typed[1:])}: expected key=value; for the prompt, write " \
                  "'prompt=\"a red circle\"'\n"
    suggested = shlex.split(err.split("write ")[1])[0]
    assert compose("generate", ["weights=model", suggested]).prompt == "a red circle"


def test_a_text_key_keeps_a_value_that_reads_as_a_number_or_a_boolean():
    """Hydra types `prompt=1e3` as 1000.0, which the text key turned into '1000.0' (`3.10` into '3.1', `true` into
    'True', `name=1_000` into '1000'; `run_dir=2024` stayed an int). Text keys, the verb's own and the groups',
    keep the text given; numeric and boolean keys keep hydra's value."""
    from megadalle.config import build, top_level
    from megadalle.config.compose import compose
    from megadalle.config.sample import GenerateConfig

    for text in ("1e3", "1_000", "3.10", "true", "NaN", "-inf", "001", "2024"):
        cfg = compose("generate", ["weights=model", f"prompt={text}", f"tokenizer={text}", "n=12", "top_p=0.5",
                                   "rerank=false", "dvae_weights=null"])
        gc = build(GenerateConfig, top_level(cfg, GenerateConfig), "")
        assert (gc.prompt, gc.tokenizer, gc.dvae_weights) == (text, text, None)
        assert (gc.n, gc.top_p, gc.rerank) == (12, 0.5, False)
    train = compose("train", ["name=1_000", "run_dir=2024", "data.shards=1e3", "logger.name=3.10", "trainer.lr=1e-3",
                              "trainer.ema=null", "model.text_len=12"])
    assert (train.name, train.run_dir, train.data.shards, train.logger.name) == ("1_000", "2024", "1e3", "3.10")
    assert (train.trainer.lr, train.trainer.ema, train.model.text_len) == (1e-3, None, 12)


def test_a_sweep_job_keeps_a_text_keys_value_too(monkeypatch, tmp_path):
    """Jobs run by hydra's runner (`-m`) compose their own config: the same rule applies to their overrides."""
    from megadalle import cli

    seen = {}
    monkeypatch.setattr(cli, "execute", lambda verb, cfg: seen.setdefault("prompt", cfg.prompt) and 0)
    assert main(["generate", "-m", "weights=model", "prompt=3.10", f"out_dir={tmp_path}"]) == 0
    assert seen == {"prompt": "3.10"}


def test_a_dollar_brace_that_does_not_resolve_is_one_line_with_the_form_that_keeps_it(capsys):
    """OmegaConf reads `${` in any value as an interpolation: `prompt=a ${x} cat` was a traceback
    (InterpolationKeyError); now one line naming the key and the value, and a form to copy that keeps the text."""
    from megadalle.config import build, top_level
    from megadalle.config.compose import compose
    from megadalle.config.sample import GenerateConfig

    for prompt, reason in (("a ${x} cat", "Interpolation key 'x' not found"),
                           ("${oc.env:MEGADALLE_UNSET_VARIABLE} at $5", "MEGADALLE_UNSET_VARIABLE")):
        assert main(["generate", "weights=model", f"prompt={prompt}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"megadalle generate: prompt={prompt!r}: ") and reason in err
        suggested = shlex.split(err.split("to keep it as text write \\${: ")[1])[0]
        cfg = compose("generate", ["weights=model", suggested])
        assert build(GenerateConfig, top_level(cfg, GenerateConfig), "").prompt == prompt  # as the stage reads it


@pytest.mark.parametrize("raw, meant", [("\\\\${x} cat", "\\${x} cat"), ("\\${y} ${x}", "${y} ${x}"),
                                            ("a\\\\\\${y} \\\\${x}", "a\\${y} \\${x}")])
def test_the_form_that_keeps_a_dollar_brace_keeps_the_escapes_before_it(raw, meant, capsys):
    """OmegaConf reads `\\\\${x}` as a backslash before an interpolation: the advice left it as it was (its `${`
    was taken for escaped already), which asked for the key `x` again. Each `${` is text in the advice, and the
    escapes before it say what OmegaConf made of them (`\\${y}` the text `${y}`, `\\\\` a backslash)."""
    from megadalle.config import build, top_level
    from megadalle.config.compose import compose
    from megadalle.config.sample import GenerateConfig

    assert main(["generate", "weights=model", f'prompt="{raw}"']) == 2  # hydra's quotes keep each backslash
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle generate: prompt={raw!r}: Interpolation key 'x' not found"), err
    suggested = shlex.split(err.split("to keep it as text write \\${: ")[1])[0]
    cfg = compose("generate", ["weights=model", suggested])
    assert build(GenerateConfig, top_level(cfg, GenerateConfig), "").prompt == meant


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "megadalle", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train-dvae" in out


AS_MAIN = r"""
import contextlib, io, json, runpy, sys
import megadalle.train.distributed
megadalle.train.distributed.exit_process = sys.exit  # its os._exit would end the first run's process
results = {}
for module, *args in json.loads(sys.argv[1]):
    sys.argv, out, err = [module, *args], io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code
    results[module] = (code, out.getvalue(), err.getvalue())
print(json.dumps(results))
"""


def test_verbs_named_after_a_module_run_as_python_dash_m_of_it():
    """`python -m megadalle.train` failed (no module named megadalle.train.__main__), `.demo`, `.encode`, `.export`
    and `.evaluate` exited 0 doing nothing. Each runs as `python -m` runs it (runpy, as __main__), all in one process
    started once, whose exit raises SystemExit instead of ending the process."""
    calls = [["megadalle.plan", "model=tiny", "gpus=1"],
             *([module, "seed=[1"] for module in ("megadalle.train", "megadalle.demo", "megadalle.encode",
                                                  "megadalle.export", "megadalle.evaluate"))]
    proc = subprocess.run([sys.executable, "-c", AS_MAIN, json.dumps(calls)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    code, out, err = results.pop("megadalle.plan")
    assert code in (0, None) and out.startswith("parameters: "), err
    for module, (code, _, err) in results.items():
        assert code == 2 and err.startswith(f"megadalle {module.split('.')[1]}: seed=[1: "), (module, err)


def test_help_into_a_pipe_closed_early_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "megadalle", "train", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command (still importing) writes anything: every write meets a closed pipe
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("at", [0, 5])
def test_local_rank_from_the_deepspeed_launcher_never_reaches_hydra(capsys, at):
    """`deepspeed --module megadalle train ...` puts the flag right after the module, before the verb."""
    argv = ["plan", "model=tiny", "gpus=1", "gpu_mem_gb=8"]
    assert main([*argv[:at], "--local_rank=3", *argv[at:]]) == 0
    assert "suggested layout" in capsys.readouterr().out


def test_a_training_verb_after_local_rank_holds_its_stop_signals_from_the_start(monkeypatch):
    """The verb was read before the flag was dropped: `--local_rank=0` was no verb that holds stop signals."""
    from contextlib import nullcontext

    from megadalle import cli

    held = []
    monkeypatch.setattr(cli, "stop_signals", lambda verb, to_exit: held.append(verb) or nullcontext())
    monkeypatch.setattr(cli, "run_command", lambda argv: 0)
    assert main(["--local_rank=0", "train", "model=tiny"]) == 0
    assert held == ["train"]


@pytest.mark.parametrize("verb", ["index", "encode", "plan"])
def test_ctrl_c_that_no_stage_reported_is_one_line_and_130(verb, monkeypatch, capsys):
    from megadalle import cli

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "resolve", lambda name: interrupted)
    monkeypatch.setattr("megadalle.preflight.preflight", lambda name, cfg: None)
    args = {"index": ["dir=x"], "encode": ["input=x", "output=y", "dvae_weights=z"], "plan": ["model=tiny"]}[verb]
    assert main([verb, *args]) == 130
    assert capsys.readouterr().err == f"megadalle {verb}: interrupted\n"


def signal_in_stage(monkeypatch, sig: int) -> None:
    """The verb's stage, replaced by one that sends itself `sig`."""
    import os
    import time

    from megadalle import cli

    def stage(cfg):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # a handler that raises ends it here
        return 0

    monkeypatch.setattr(cli, "resolve", lambda name: stage)
    monkeypatch.setattr("megadalle.preflight.preflight", lambda name, cfg: None)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
@pytest.mark.parametrize("verb, args", [("index", ["dir=x"]), ("encode", ["input=x", "output=y", "dvae_weights=z"]),
                                        ("import-dvae", ["encoder=x", "decoder=y", "output=z"]),
                                        ("export", ["run=x", "output=y"]), ("plan", ["model=tiny"]),
                                        ("tokenizer", ["input=x", "output=y"])])
def test_a_scheduler_signal_ends_a_data_verb_with_one_line_and_75(verb, args, sig, monkeypatch, capsys):
    """TERM's default action ended them with 143 and nothing said, what they were writing left to sweep."""
    import signal

    from megadalle.train.signals import STOPPED_EXIT

    def unheld(signum, frame):
        raise AssertionError(f"{sig} reached the handler from before the command: {verb} held none")

    signal_in_stage(monkeypatch, getattr(signal, sig))
    before = {s: signal.signal(s, unheld) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        status = main([verb, *args])
        assert all(signal.getsignal(s) is unheld for s in before)  # given back
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert status == STOPPED_EXIT
    assert capsys.readouterr().err == f"megadalle {verb}: stopped by {sig}; rerun the same command to finish it\n"


def test_user_errors_print_one_line(monkeypatch, capsys):
    from megadalle import cli
    from megadalle.train.checkpoint import CheckpointError

    def refuse(cfg):
        raise CheckpointError("outputs/run/checkpoints/step_00000004: manifest missing")

    monkeypatch.setattr(cli, "resolve", lambda verb: refuse)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "megadalle plan: outputs/run/checkpoints/step_00000004: manifest missing"
