"""What a training run gives wandb: its config, and its start's failure in one line."""
import json
import sys

import pytest
import wandb

from megadalle.cli import main
from megadalle.train import checkpoint_save

RUN = ["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.warmup_steps=0",
       "trainer.log_every=1", "data.num_workers=0"]


class FakeRun:
    def __init__(self, kwargs):
        self.kwargs = kwargs

    def log(self, metrics, step):
        pass

    def finish(self, exit_code=None):
        pass


@pytest.fixture
def inits(monkeypatch):
    """The keyword arguments of every wandb.init."""
    seen = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.append(kwargs) or FakeRun(kwargs))
    return seen


def test_wandb_records_run_jsons_config_and_the_layout(tmp_path, inits):
    """wandb got the config as typed (relative paths, no digests) and neither told the world size or global batch."""
    run = tmp_path / "run"
    assert main([*RUN, "logger=wandb", f"run_dir={run}"]) == 0
    recorded = json.loads((run / "run.json").read_text())
    [init] = inits
    assert init["name"] == f"{tmp_path.name}/run"  # the run directory's last two parts: wandb's were random words
    assert init["config"] == {**recorded["config"], "sha256": recorded["sha256"],
                              "layout": {"world_size": 1, "dp_world": 1, "pipeline_stages": 1, "zero_stage": 1,
                                         "global_batch": 4, "micro_batch": 4}}


def test_an_unreachable_wandb_server_stops_the_run_in_one_line(capsys, tmp_path, monkeypatch):
    """wandb.init's CommError after its 90 s timeout went up through the stack as a traceback, printed twice."""
    def unreachable(**kwargs):
        raise wandb.errors.CommError("Failed to get resume status for run 7b2aee63: context deadline exceeded\n"
                                     "lookup api.forge.coreweave.com: no such host")

    monkeypatch.setattr(wandb, "init", unreachable)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    run = tmp_path / "run"
    assert main([*RUN, "logger=wandb", "logger.mode=online", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "megadalle train: logger.mode=online: wandb could not start a run on https://api.forge.coreweave.com "
        "(Failed to get resume status for run 7b2aee63: context deadline exceeded); without a reachable server log "
        f"with logger.mode=offline and upload later with `wandb sync {run}/wandb/offline-run-*`"), err
    assert "Traceback" not in err


def test_a_wandb_that_does_not_import_is_one_line_before_the_engine_starts(capsys, tmp_path, monkeypatch):
    """It was a 40-line traceback once the engine was built, and rank 1 of two died in the broadcast it waited in
    (a container built without wandb, or a protobuf clash that makes `import wandb` raise TypeError)."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    run = tmp_path / "run"
    assert main([*RUN, "logger=wandb", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("megadalle train: logger.mode=offline: wandb does not import (") and \
        err.splitlines()[-1].endswith("); install it (pip install 'wandb>=0.17'), or logger=none trains without wandb")
    assert "Traceback" not in err and not (run / "run.json").exists()  # refused before the run started
    assert main([*RUN, "logger=none", f"run_dir={run}"]) == 0


def test_a_wandb_folder_that_cannot_be_written_is_one_line_not_a_bug(capsys, tmp_path):
    """A file (or another user's folder) where <run>/wandb goes was a 57-line traceback, reported as megadalle's bug."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "wandb").write_text("not a folder")
    assert main([*RUN, "logger=wandb", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert line.startswith(f"megadalle train: logger.mode=offline: wandb cannot write {run / 'wandb'} (")
    assert line.endswith("); make it writable, or logger=none trains without wandb")
    assert "Traceback" not in err


def test_starting_wandb_drops_the_errors_of_logging(tmp_path, inits, monkeypatch):
    """On a full disk wandb's debug-log handler failed at each write and logging printed its "--- Logging error ---"
    traceback, which wandb's copy of stderr failed to write again: 13,800 lines before the run's one line."""
    import logging

    monkeypatch.setattr(logging, "raiseExceptions", True)
    assert main([*RUN, "logger=wandb", f"run_dir={tmp_path / 'run'}"]) == 0
    assert logging.raiseExceptions is False


@pytest.mark.parametrize("project, why", [("team/proj", "wandb refuses '/' in a project name (any of /\\#?%:)"),
                                          ("", "wandb takes a project name of 1 to 128 characters")])
def test_a_project_name_wandb_refuses_is_refused_before_the_run(capsys, tmp_path, project, why):
    """wandb refused it once the engine had started, and the line advised logger=none, not the key."""
    assert main([*RUN, "logger=wandb", f"logger.project={project}", f"run_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.strip() == f"megadalle train: logger.project={project!r}: {why}"


def test_a_run_stopped_before_going_backs_first_save_resumes_the_old_branch_into_its_own_id(tmp_path, inits,
                                                                                             monkeypatch):
    """resume=<step_2> took a new wandb id and failed before its first save, leaving step_4 (the old branch) the newest
    checkpoint: resume=auto from there logged the old branch into the new branch's id, which wandb_id.json held."""
    run = tmp_path / "run"
    command = [*RUN, "logger=wandb", f"run_dir={run}", "trainer.steps=4", "trainer.checkpoint_every=2",
               "trainer.keep_checkpoints=0"]
    assert main(command) == 0
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_save, "save", lambda *args, **kwargs: sys.exit("stopped before the first save"))
        with pytest.raises(SystemExit):
            main([*command, f"resume={run / 'checkpoints' / 'step_00000002'}"])
    assert main([*command, "trainer.steps=5"]) == 0
    first, branch, resumed = (init["id"] for init in inits)
    assert branch != first and resumed == first
