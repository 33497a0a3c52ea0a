"""The dVAE's two annealed quantities reach what they act on at each update: the Gumbel-softmax temperature τ the
decoder's relaxed codes are drawn at (1 -> 1/16, cosine) and the KL weight β the loss adds (0 -> β_max, cosine), as
the paper trains it. The schedules' own tests checked their values alone; a model relaxing at a fixed τ, a training
step passing τ's start, or a loss at the final β from the first update trained on in silence (τ is logged from the
schedule, not from what the model used). Each check here compares with the relaxation written out by hand."""
import dataclasses
import json
import math

import pytest
import torch

from megadalle.cli import main
from megadalle.config.dvae import DVAEObjective
from megadalle.models.dvae import DVAE
from megadalle.train.dvae import DVAETask

from .conftest import rectangles

OBJECTIVE = DVAEObjective(kl_weight=6.6, kl_warmup_steps=10, tau_start=1.0, tau_end=1 / 16, tau_anneal_steps=20,
                          reconstruction="gaussian")


def hand_tau(step: int, steps: int = 20) -> float:
    """Half a cosine from 1 down to 1/16 over `steps` updates, 1/16 after."""
    return 1 / 16 + (1 - 1 / 16) * (1 + math.cos(math.pi * min(step, steps) / steps)) / 2


def hand_beta(step: int, beta: float = 6.6, steps: int = 10) -> float:
    """Half a cosine from 0 up to `beta` over `steps` updates, `beta` after."""
    return beta * (1 - math.cos(math.pi * min(step, steps) / steps)) / 2


def relaxed(logits: torch.Tensor, tau: float, seed: int) -> torch.Tensor:
    """softmax((logits + g) / tau) over the codebook with g ~ Gumbel(0, 1) drawn from `seed` as torch draws it
    (-log of an Exp(1) sample of the logits' shape)."""
    torch.manual_seed(seed)
    gumbel = -torch.empty(logits.shape).exponential_().log()
    return torch.softmax((logits.float() + gumbel) / tau, dim=1)


def decoder_inputs(model: DVAE) -> list[torch.Tensor]:
    """The relaxed codes each forward hands the decoder, in order."""
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.fixture
def model(small_dvae_config):
    torch.manual_seed(0)
    return DVAE(small_dvae_config).eval()


def test_the_relaxation_is_gumbel_softmax_at_the_temperature_given(model):
    images = rectangles(2, 32)
    with torch.no_grad():
        logits = model.logits(images)
    seen = decoder_inputs(model)
    for tau in (1.0, 0.25, 1 / 16):
        torch.manual_seed(3)
        with torch.no_grad():
            model(images, tau)
        torch.testing.assert_close(seen[-1], relaxed(logits, tau, seed=3), rtol=1e-4, atol=1e-6)
    peaks = [z.amax(dim=1).mean() for z in seen]
    assert peaks[0] < peaks[1] < peaks[2], "a lower temperature gives codes nearer one-hot"


@pytest.mark.parametrize("step", [0, 3, 10, 15, 30])
def test_the_steps_temperature_reaches_the_model_and_its_kl_weight_the_loss(step, small_dvae_config):
    task = DVAETask(dataclasses.replace(small_dvae_config, objective=OBJECTIVE), data=None)
    torch.manual_seed(0)
    model = task.build_model()
    images = rectangles(2, 32)
    with torch.no_grad():
        logits = model.logits(images)
    seen = decoder_inputs(model)
    torch.manual_seed(5)
    loss, metrics = task.loss(model, {"image": images}, step)
    assert metrics["tau"] == pytest.approx(hand_tau(step)) and metrics["beta"] == pytest.approx(hand_beta(step))
    torch.testing.assert_close(seen[-1], relaxed(logits, hand_tau(step), seed=5), rtol=1e-4, atol=1e-6)
    cells, pixel_channels = logits.shape[2] * logits.shape[3], 3 * 32 * 32
    assert loss.item() == pytest.approx(metrics["nll"] + hand_beta(step) * metrics["kl"] * cells / pixel_channels,
                                        rel=1e-5)


def test_a_training_run_logs_each_updates_temperature_and_kl_weight(tmp_path, image_shards, monkeypatch):
    """The loop hands the loss its own update's index: the logged τ and β follow the schedules update by update."""
    monkeypatch.chdir(tmp_path)
    steps = 5
    assert main(["train-dvae", f"data.shards={image_shards}", "dvae=tiny", "dvae.n_hid=16", "trainer=tiny",
                 f"trainer.steps={steps}", "trainer.micro_batch=2", "trainer.warmup_steps=1", "trainer.log_every=1", "logger=none",
                 "dvae.objective.kl_warmup_steps=3", "dvae.objective.tau_anneal_steps=4",
                 f"run_dir={tmp_path / 'run'}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "loss" in row]
    assert [row["step"] for row in rows] == list(range(steps))
    assert [row["tau"] for row in rows] == pytest.approx([hand_tau(n, steps=4) for n in range(steps)])
    assert [row["beta"] for row in rows] == pytest.approx([hand_beta(n, beta=1.0, steps=3) for n in range(steps)])
