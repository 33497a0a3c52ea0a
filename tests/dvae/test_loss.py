"""The dVAE objective against its formulas: pixel map, logit-Laplace and Gaussian NLLs, KL to uniform, schedules."""
import math

import pytest
import torch

from megadalle.config.dvae import DVAEObjective
from megadalle.models.dvae_loss import (cosine, elbo_loss, gaussian_nll, kl_to_uniform, kl_weight, logit_laplace_nll,
                                        map_pixels, temperature, unmap_pixels, usage_gap)


def test_pixel_map_round_trip_and_range():
    x = torch.rand(4, 3, 8, 8)
    y = map_pixels(x, 0.1)
    assert y.min() >= 0.1 and y.max() <= 0.9
    assert map_pixels(torch.zeros(1), 0.1).item() == pytest.approx(0.1)
    assert map_pixels(torch.ones(1), 0.1).item() == pytest.approx(0.9)
    torch.testing.assert_close(unmap_pixels(y, 0.1), x)
    assert unmap_pixels(torch.tensor([0.0, 1.0]), 0.1).tolist() == [0.0, 1.0]  # clamped


def test_logit_laplace_nll_matches_the_density_formula():
    x = torch.tensor([0.3])
    mu, ln_b = torch.tensor([0.5]), torch.tensor([-0.7])
    b = math.exp(-0.7)
    density = math.exp(-abs(math.log(0.3 / 0.7) - 0.5) / b) / (2 * b * 0.3 * 0.7)
    assert logit_laplace_nll(x, mu, ln_b).item() == pytest.approx(-math.log(density), rel=1e-5)


def test_logit_laplace_nll_is_a_laplace_on_logits_plus_the_jacobian():
    x = map_pixels(torch.rand(2, 3, 5, 5), 0.1)
    mu, ln_b = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5) * 0.5
    logit = torch.log(x) - torch.log1p(-x)
    expected = -(torch.distributions.Laplace(mu, ln_b.exp()).log_prob(logit) - torch.log(x * (1 - x))).mean()
    torch.testing.assert_close(logit_laplace_nll(x, mu, ln_b), expected)


def test_logit_laplace_density_integrates_to_one():
    x = torch.linspace(1e-7, 1 - 1e-7, 200001, dtype=torch.float64)
    nll = torch.vmap(lambda v: logit_laplace_nll(v, torch.tensor(0.4), torch.tensor(-1.0)))(x)
    assert torch.trapezoid(torch.exp(-nll.double()), x).item() == pytest.approx(1.0, abs=2e-3)


def test_gaussian_nll_is_the_normal_density_of_the_decoders_median():
    x = map_pixels(torch.rand(2, 3, 5, 5), 0.1)
    mu = torch.randn(2, 3, 5, 5)
    expected = -torch.distributions.Normal(torch.sigmoid(mu), 0.07).log_prob(x).mean()
    torch.testing.assert_close(gaussian_nll(x, mu, 0.07), expected)


def test_elbo_reads_the_chosen_likelihood_and_the_gaussian_ignores_the_scale_channels():
    images, logits, stats = torch.rand(2, 3, 8, 8), torch.randn(2, 16, 2, 2), torch.randn(2, 6, 8, 8)
    kl = kl_to_uniform(logits) * 4 / (3 * 64)
    laplace, _ = elbo_loss(images, logits, stats, 1.0, 0.1)
    torch.testing.assert_close(laplace, logit_laplace_nll(map_pixels(images, 0.1), stats[:, :3], stats[:, 3:]) + kl)
    gaussian, metrics = elbo_loss(images, logits, stats, 1.0, 0.1, reconstruction="gaussian", sigma=0.2)
    torch.testing.assert_close(gaussian, gaussian_nll(map_pixels(images, 0.1), stats[:, :3], 0.2) + kl)
    other_scales = torch.cat([stats[:, :3], torch.randn(2, 3, 8, 8)], dim=1)
    again, _ = elbo_loss(images, logits, other_scales, 1.0, 0.1, reconstruction="gaussian", sigma=0.2)
    assert again.item() == gaussian.item() and metrics["nll"] == pytest.approx(float(gaussian - kl), rel=1e-5)


def test_kl_to_uniform():
    assert kl_to_uniform(torch.zeros(2, 16, 3, 3)).item() == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.full((1, 16, 1, 1), -1e4)
    one_hot[0, 3] = 0
    assert kl_to_uniform(one_hot).item() == pytest.approx(math.log(16), rel=1e-5)
    logits = torch.randn(2, 16, 3, 3)
    q = logits.softmax(1)
    expected = (q * (q.log() - math.log(1 / 16))).sum(1).mean()
    torch.testing.assert_close(kl_to_uniform(logits), expected)


def test_usage_gap_is_zero_when_the_batch_uses_every_code_and_ln_k_minus_h_otherwise():
    every = torch.full((4, 16, 2, 2), -1e4)  # 16 cells, each a different code
    for i in range(16):
        every[i // 4, i, (i % 4) // 2, i % 2] = 0
    assert usage_gap(every).item() == pytest.approx(0.0, abs=1e-5)
    assert usage_gap(torch.zeros(2, 16, 3, 3)).item() == pytest.approx(0.0, abs=1e-6)  # flat cells: no gap either
    same = torch.zeros(2, 16, 3, 3)
    same[:, 5] = 50.0  # every cell picks code 5
    assert usage_gap(same).item() == pytest.approx(math.log(16), rel=1e-4)
    logits = torch.randn(3, 16, 2, 2)
    q_bar = (logits / 0.5).softmax(1).mean((0, 2, 3))
    torch.testing.assert_close(usage_gap(logits, tau=0.5), math.log(16) + (q_bar * q_bar.log()).sum())


def test_elbo_adds_the_usage_term_only_when_weighted():
    images, logits, stats = torch.rand(2, 3, 8, 8), torch.randn(2, 16, 2, 2), torch.randn(2, 6, 8, 8)
    plain, metrics = elbo_loss(images, logits, stats, 1.0, 0.1)
    assert "usage_gap" not in metrics
    weighted, metrics = elbo_loss(images, logits, stats, 1.0, 0.1, usage_weight=3.0, tau=0.5)
    expected = plain + 3.0 * usage_gap(logits, 0.5) * 4 / (3 * 64)  # per grid cell, scaled like the KL
    torch.testing.assert_close(weighted, expected)
    assert metrics["usage_gap"] == pytest.approx(usage_gap(logits, 0.5).item())


def test_schedules_at_their_ends():
    obj = DVAEObjective(kl_weight=6.6, kl_warmup_steps=5000, tau_start=1.0, tau_end=1 / 16, tau_anneal_steps=150000)
    assert kl_weight(0, obj) == 0.0
    assert kl_weight(2500, obj) == pytest.approx(3.3)
    assert kl_weight(5000, obj) == kl_weight(10**7, obj) == 6.6
    assert temperature(0, obj) == 1.0
    assert temperature(75000, obj) == pytest.approx((1 + 1 / 16) / 2)
    assert temperature(150000, obj) == temperature(10**7, obj) == 1 / 16
    assert all(cosine(s, 1.0, 0.0, 10) >= cosine(s + 1, 1.0, 0.0, 10) for s in range(12))
    assert cosine(0, 1.0, 0.5, 0) == 0.5


def test_usage_term_is_off_for_the_paper_and_on_for_the_tiny_dvae():
    from megadalle.config import build
    from megadalle.config.compose import compose
    from megadalle.config.dvae import DVAEConfig
    from megadalle.errors import UserError

    paper = build(DVAEConfig, compose("train-dvae", ["dvae=paper"]).dvae, "dvae")
    tiny = build(DVAEConfig, compose("train-dvae", ["dvae=tiny"]).dvae, "dvae")
    assert paper.objective.usage_weight == 0.0 and paper.objective.kl_weight == 6.6
    assert tiny.objective.usage_weight > 0
    with pytest.raises(UserError, match="dvae.objective.usage_weight"):
        build(DVAEConfig, {"objective": {"usage_weight": -1.0}}, "dvae")
    assert paper.objective.reconstruction == "logit_laplace"
    with pytest.raises(UserError, match="dvae.objective.reconstruction.*logit_laplace, gaussian"):
        build(DVAEConfig, {"objective": {"reconstruction": "l2"}}, "dvae")
    with pytest.raises(UserError, match="dvae.objective.sigma"):
        build(DVAEConfig, {"objective": {"sigma": 0.0}}, "dvae")
