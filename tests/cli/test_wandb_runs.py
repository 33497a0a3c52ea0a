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
