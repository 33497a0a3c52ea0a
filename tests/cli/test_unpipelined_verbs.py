"""train-dvae and train-clip cannot run pipelined (only the Transformer is built in stages). `deepspeed=pipe`
was listed in their --help and, on one process, refused with "launch a multiple of 2" ranks; launched so, DeepSpeed
started and refused "task 'dvae' cannot run pipelined". Now refused before anything starts, naming the layouts that
work."""
import pytest

from megadalle.cli import main
from megadalle.config.compose import group_options
from megadalle.config.verbs import GROUP_OPTIONS
from megadalle.train import distributed
from megadalle.train.clip import ClipTask
from megadalle.train.dvae import DVAETask
from megadalle.train.task import runs_pipelined
from megadalle.train.transformer import TransformerTask

VERBS = {"train-dvae": ["dvae=tiny"], "train-clip": ["clip=tiny", "tokenizer=unused.model"]}
LAYOUTS = "deepspeed=zero1 or deepspeed=zero2 or deepspeed=zero3"
TASKS = {"train": TransformerTask, "train-dvae": DVAETask, "train-clip": ClipTask}
"""The task each training verb trains."""


@pytest.fixture(autouse=True)
def no_process_group(monkeypatch):
    """Refused before anything starts: the process group is never started (an earlier test of the session may
    have left one, so its state alone tells nothing)."""
    def started(*args, **kwargs):
        raise AssertionError("the process group was started before the refusal")

    monkeypatch.setattr(distributed, "init", started)


def _refusal(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


@pytest.mark.parametrize("verb", VERBS)
def test_the_pipe_layout_is_refused_up_front_with_the_layouts_that_work(capsys, image_shards, verb):
    argv = [verb, *VERBS[verb], "trainer=tiny", "logger=none", f"data.shards={image_shards}", "trainer.steps=1"]
    assert _refusal(capsys, [*argv, "deepspeed=pipe"]) == (
        f"megadalle {verb}: deepspeed=pipe: train and plan read this deepspeed config, not {verb}; {verb} takes "
        f"{LAYOUTS}\n")
    assert _refusal(capsys, [*argv, "deepspeed=zero1", "deepspeed.pipeline_stages=2"]) == (
        f"megadalle {verb}: deepspeed.pipeline_stages=2: {verb} cannot run pipelined (deepspeed=pipe is train's: only "
        f"the Transformer is built in stages); use {LAYOUTS} with deepspeed.pipeline_stages=1\n")


@pytest.mark.parametrize("verb", VERBS)
def test_the_help_lists_only_the_layouts_the_verb_runs(capsys, verb):
    assert main([verb, "--help"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("deepspeed ")]
    assert listed == [["deepspeed", "[zero1]", "zero2", "zero3"]]


@pytest.mark.parametrize("verb", TASKS)
def test_a_verb_offers_the_pipe_layout_where_its_task_runs_pipelined(verb):
    """The options config/verbs.py lists (the config cannot import the tasks) are the task's answer, which the engine
    asks; preflight refuses a stage count for the verbs listed without `pipe`."""
    offered = GROUP_OPTIONS.get(verb, {}).get("deepspeed") or group_options("deepspeed")
    assert ("pipe" in offered) == runs_pipelined(TASKS[verb])
