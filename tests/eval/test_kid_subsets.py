"""KID over random subsets when the two feature sets differ in size, its spread, and the pixels Inception is given.

evaluate compares `max_real` real images (10000 by default) with the generated ones, usually far fewer, in subsets of
`kid_subset_size` (1000): a subset must then be capped by the SMALLER set, or drawing it without replacement fails.
The earlier test used sets of equal size, so a cap by the real set alone passed, as did a sample std (ddof=1) where
torch-fidelity reports the population std. The references here sum the unbiased MMD^2 with the cubic kernel
k(x, y) = (x.y / d + 1)^3 pair by pair over the subsets drawn as torch-fidelity draws them (per subset, the first
set's rows then the second's, without replacement, from one generator seeded by `seed`).
"""
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from megadalle.fidelity import inception, kernel_distance


def unbiased_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2 (Bińkowski et al. 2018, eq. 4) with the cubic polynomial kernel, as explicit sums over pairs."""
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2


def drawn_subsets(n_a: int, n_b: int, size: int, subsets: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.choice(n_a, size, replace=False), rng.choice(n_b, size, replace=False)) for _ in range(subsets)]


def test_fewer_generated_than_real_caps_the_subsets_at_the_generated_count():
    """20 real rows against 7 generated with subset_size=1000: every subset holds 7 rows, all of the generated set
    (in some order) and 7 of the real ones."""
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(20, 4)), rng.normal(0.4, 1.2, size=(7, 4))
    draws = drawn_subsets(20, 7, 7, 3, seed=5)
    assert len({tuple(sorted(ia)) for ia, _ in draws}) > 1  # the real set really is subsampled
    values = [unbiased_mmd(real[ia], fake[ib]) for ia, ib in draws]
    mean, _ = kernel_distance(real, fake, subsets=3, subset_size=1000, seed=5)
    assert mean == pytest.approx(sum(values) / 3, rel=1e-9)


def test_the_spread_is_the_population_std_of_the_subset_values():
    """torch-fidelity's kid_std is np.std's default (ddof=0); written out here as the root mean square deviation."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(9, 3)), rng.normal(0.3, 0.8, size=(7, 3))
    values = [unbiased_mmd(a[ia], b[ib]) for ia, ib in drawn_subsets(9, 7, 5, 4, seed=0)]
    mean = sum(values) / 4
    spread = (sum((v - mean) ** 2 for v in values) / 4) ** 0.5
    assert spread > 1e-3 * abs(mean)  # different subsets, different values: the std is not trivially 0
    assert kernel_distance(a, b, subsets=4, subset_size=5, seed=0) == pytest.approx((mean, spread), rel=1e-9)


class RecordingInception(nn.Module):
    """Stands in for torch-fidelity's FeatureExtractorInceptionV3 (not installed here): keeps the pixels it gets."""
    seen: list[torch.Tensor] = []

    def __init__(self, name, features_list, feature_extractor_weights_path):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, pixels):
        RecordingInception.seen.append(pixels)
        return (pixels.float().flatten(1) * self.scale,)


def test_inception_gets_images_rounded_to_the_nearest_uint8_level(tmp_path, monkeypatch):
    """torch-fidelity's reference statistics come from uint8 images; images in [0, 1] go to the nearest of the 256
    levels (clamped), not down to the level below, which would shift every pixel of every generated image."""
    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = RecordingInception
    package.feature_extractor_inceptionv3 = module
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    monkeypatch.setattr(RecordingInception, "seen", [])
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"")
    extract = inception(str(weights))
    levels = [0.499, 0.51, 1.6, 127.5001, 254.7, 255.0, -3.0, 300.0]
    extract(torch.tensor(levels).div(255).reshape(1, 1, 1, 8).expand(1, 3, 1, 8))
    (pixels,) = RecordingInception.seen
    assert pixels.dtype == torch.uint8
    assert pixels[0, 0, 0].tolist() == [0, 1, 2, 128, 255, 255, 0, 255]
