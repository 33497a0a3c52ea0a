"""A verb's stage that raises an error no verb reports is noted as a crash for the process group
(megadalle.train.distributed.crashed), whoever runs it: a sweep job in a launcher's process (hydra_app.VerbJob) leaves
through Python's exit, not `entry`, and its exit meeting must be bounded as the command's is."""
import pytest

import megadalle.preflight
from megadalle import cli
from megadalle.config import ConfigError
from megadalle.train import distributed


@pytest.fixture
def stage(monkeypatch):
    monkeypatch.setattr(distributed, "_crashed", False)
    monkeypatch.setattr(megadalle.preflight, "preflight", lambda verb, cfg: None)
    return lambda run: monkeypatch.setattr(cli, "resolve", lambda verb: run)


def test_an_unreported_error_of_a_stage_is_noted_as_a_crash(stage):
    def crash(cfg):
        raise RuntimeError("CUDA out of memory")

    stage(crash)
    with pytest.raises(RuntimeError):
        cli.execute("train", None)
    assert distributed._crashed


def test_a_reported_error_is_no_crash(stage):
    def refuse(cfg):
        raise ConfigError("trainer.lr=-1: must be positive")

    stage(refuse)
    assert cli.execute("train", None) == 2
    assert not distributed._crashed
