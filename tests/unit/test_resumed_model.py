"""A resume from a checkpoint of another model's shapes says so (the parameter, the model keys its run trained
with) instead of taking the failed load for damage."""
import json

import pytest
import torch

from megadalle.config import typed_container
from megadalle.config.compose import compose
from megadalle.config.train import RunConfig
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.checkpoint_load import check_resumed_model, unreadable
from megadalle.train.transformer import FACTORY, task_from_config

TINY = ["data=synthetic", "model=tiny", "trainer=tiny", "logger=none"]


def task(*overrides):
    return task_from_config(compose("train", [*TINY, *overrides]))


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint path of a run whose run.json records the tiny model with mlp_ratio=4."""
    run = tmp_path / "other"
    run.mkdir()
    config = typed_container(compose("train", [*TINY, "model.mlp_ratio=4"]), RunConfig)
    (run / "run.json").write_text(json.dumps({"task_factory": FACTORY, "config": config}))
    return str(run / "checkpoints" / "step_00000002")


def test_another_runs_checkpoint_of_other_shapes_names_the_parameter_and_the_model_keys(checkpoint):
    with pytest.raises(CheckpointError, match=r"^resume=.*step_00000002: its run trained another model than the one "
                                              r"configured here \(blocks\.0\.mlp\.0\.weight: \[512, 128\] there, "
                                              r"\[256, 128\] here\); give the model keys it trained with: "
                                              r"model\.mlp_ratio=4$"):
        check_resumed_model(task("model.mlp_ratio=2"), checkpoint)


def test_vocabulary_tables_in_other_pieces_name_the_key(tmp_path):
    """The keys were read from the export's config, whose tables are whole: the message named no key."""
    run = tmp_path / "other"
    run.mkdir()
    config = typed_container(compose("train", [*TINY, "model.vocab_chunk=50"]), RunConfig)
    (run / "run.json").write_text(json.dumps({"task_factory": FACTORY, "config": config}))
    with pytest.raises(CheckpointError, match=r"give the model keys it trained with: model\.vocab_chunk=50$"):
        check_resumed_model(task("model.vocab_chunk=0"), str(run / "checkpoints" / "step_00000002"))


def test_the_same_shapes_resume(checkpoint):
    check_resumed_model(task("model.mlp_ratio=4", "model.dropout=0.1"), checkpoint)
    check_resumed_model(task("model.mlp_ratio=2"), "auto")


def test_a_failed_load_of_other_shapes_is_not_called_damage(tmp_path):
    try:
        torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 4).state_dict())
    except RuntimeError as err:
        message = unreadable(err, tmp_path / "step_00000002", None)
    assert "holds another model than the one configured (size mismatch for weight: copying a param with shape " \
           "torch.Size([4, 2]) from checkpoint" in message and "damaged" not in message
