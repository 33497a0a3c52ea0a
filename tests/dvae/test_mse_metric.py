"""The dVAE's logged "mse" is the decoded median's, in the images' [0, 1], computed by hand (hunt L11).

The decoder's median sigmoid(mu) lives in the mapped space [eps, 1 - eps] and can leave it; the image it stands for
is that mapping undone and clamped to [0, 1], as `DVAE.stats_to_images` decodes it. An mse read in the mapped
space, unclamped, changed only this metric, so no loss test saw it. The stats are drawn wide, so that sigmoid(mu)
falls well inside, near 0 and near 1 (where the clamp acts), and eps is the paper's 0.1 (where the unmapping moves
every value).
"""
import pytest
import torch

from megadalle.models.dvae_loss import elbo_loss

EPS = 0.1


def test_mse_is_the_decoded_images_against_the_images():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 8, 8, generator=g)
    logits = torch.randn(2, 16, 2, 2, generator=g)
    stats = torch.randn(2, 6, 8, 8, generator=g) * 4
    median = torch.sigmoid(stats[:, :3])
    assert (median < EPS).float().mean() > 0.2 and (median > 1 - EPS).float().mean() > 0.2  # the clamp acts
    decoded = ((median - EPS) / (1 - 2 * EPS)).clamp(0, 1)
    expected = ((decoded - images) ** 2).mean().item()
    _, metrics = elbo_loss(images, logits, stats, 1.0, EPS)
    assert metrics["mse"] == pytest.approx(expected, rel=1e-6)
