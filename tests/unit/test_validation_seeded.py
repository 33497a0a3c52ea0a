"""A validation is a deterministic function of the weights (train/validate.py `seeded`).

The dVAE's validation loss draws Gumbel noise (its forward samples soft codes, in eval mode too). Unseeded, that
noise came from wherever the training RNG stood: two evaluations of the same weights gave two val/loss values, and a
resumed run logged others than the uninterrupted one. The validation tests compare the trainer's val/loss with a
plain evaluation under the same `seeded`, so they could not see it.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from megadalle.config.compose import compose
from megadalle.models.dvae import DVAE
from megadalle.train.dvae import task_from_config
from megadalle.train.task import VALIDATION_SEED, DataPart
from megadalle.train.validate import Validator
from tests.dvae.conftest import write_image_shards

MICRO, BATCHES = 4, 2


@pytest.fixture
def validator(tmp_path):
    """The dVAE task's Validator over 8 held-out images, on a stand-in for one CPU rank's engine."""
    write_image_shards(tmp_path / "shards", 8, 32, 8, seed=0)
    write_image_shards(tmp_path / "shards" / "val", 8, 32, 8, seed=1)
    cfg = compose("train-dvae", [f"data.shards={tmp_path / 'shards'}", "dvae=tiny", "dvae.n_hid=16",
                                 "dvae.vocab_size=64", "data.num_workers=0"])
    task = task_from_config(cfg)
    model = DVAE(task.cfg)
    engine = SimpleNamespace(module=model, global_rank=0)
    built = SimpleNamespace(engine=engine, model=model, pipeline=None, dtype=torch.float32,
                            device=torch.device("cpu"), dp_group=None)
    return Validator(task, built, DataPart(MICRO, 1, 0, 1), 1, BATCHES, VALIDATION_SEED)


def test_two_validations_of_the_same_weights_agree_whatever_the_rng_held(validator):
    """The same weights validated after two different RNG states (another seed, some draws since) give the same
    val/ metrics, bit for bit."""
    torch.manual_seed(1)
    first = validator.run(0)
    torch.manual_seed(2)
    torch.rand(5)
    assert validator.run(0) == first


def test_the_noise_is_there_to_be_seeded(validator):
    """Without a seed, the same weights' loss differs between two RNG states: the test above has something to pin."""
    model, batch = validator.built.model.eval(), validator.batches()[0]
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            losses.append(validator.task.validation_loss(model, batch, 0)["loss"])
    assert losses[0] != losses[1]


def test_validation_leaves_the_training_rng_where_it_was(validator):
    """The seeding is on a forked RNG: the training stream goes on as if no validation ran (resume's losses)."""
    torch.manual_seed(5)
    validator.run(0)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
