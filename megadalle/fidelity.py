"""FID and KID between two sets of image features, and the feature extractors that make them.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the two feature sets;
KID (Bińkowski et al. 2018) is the unbiased squared MMD with the cubic polynomial kernel
k(x, y) = (x·y / d + 1)^3, averaged over random equal-size subsets (its mean and spread are both
reported). These are the definitions torch-fidelity and clean-fid implement; they are computed here
on features so that any extractor serves, and because neither package imports without a torchvision
build matching the installed torch (the CPU machines here have none).

Extractors are looked up by name in a registry: `inception` is torch-fidelity's InceptionV3 (the
FID reference network, 2048-d pool features) built from a LOCAL weights file, never downloaded;
tests and experiments register their own (`register_feature_extractor`). An extractor maps images
[B, 3, H, W] in [0, 1] to features [B, D].
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from megadalle.errors import UserError

Extractor = Callable[[torch.Tensor], torch.Tensor]


class FeatureExtractorError(UserError, ValueError):
    """An unknown extractor name, or a missing weights file or package for a known one."""


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between feature sets a [N, D] and b [M, D] (float64; N, M >= 2).

    tr(sqrtm(Ca Cb)) is taken as the sum of the square roots of the eigenvalues of the symmetric
    PSD matrix Ca^1/2 Cb Ca^1/2 (the same eigenvalues as Ca Cb): exact, and stable for the singular
    covariances of fewer samples than dimensions, where a general sqrtm needs an offset.
    """
    a, b = two_sets(a, b, "FID")
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def two_sets(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 [rows, D], each of at least 2 rows: a covariance (FID) or an unbiased
    within-set mean over distinct pairs (KID) is undefined below that, and numpy would fail far from the cause
    (an eigenvalue solver on NaNs)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{metric} needs at least 2 rows in each feature set, got {len(a)} and {len(b)}")
    return a, b


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over `subsets`) between feature sets a and b; subsets hold min(subset_size, N, M) rows."""
    a, b = two_sets(a, b, "KID")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"kernel_distance: subset_size={subset_size} must be at least 2")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


REGISTRY: dict[str, Callable[[str | None], Extractor]] = {}
"""name -> factory(weights path or None) -> extractor."""


def register_feature_extractor(name: str, factory: Callable[[str | None], Extractor]) -> None:
    REGISTRY[name] = factory


def feature_extractor(name: str, weights: str | None) -> Extractor:
    if name not in REGISTRY:
        raise FeatureExtractorError(f"feature_extractor={name!r}: unknown; registered: {sorted(REGISTRY)}")
    return REGISTRY[name](weights)


def inception(weights: str | None) -> Extractor:
    """torch-fidelity's InceptionV3 (`inception-v3-compat`, 2048-d) from a local weights file."""
    if not weights or not Path(weights).is_file():
        given = f"feature_weights={weights}: no such file" if weights else "feature_weights is not set"
        raise FeatureExtractorError(
            f"{given}: FID/KID with the inception extractor need the local weights file (torch-fidelity's "
            "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded at run time): give its path, or fid=false "
            "to measure without FID/KID")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as err:  # ImportError, or torchvision failing to load its compiled ops
        raise FeatureExtractorError(f"feature_extractor='inception' needs torch-fidelity and a torchvision "
                                    f"matching torch (`scripts/setup.sh eval` in the megadalle checkout installs "
                                    f"them for this torch): {err}") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    net.eval()

    def extract(images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return net(pixels.to(next(net.parameters()).device))[0]

    return extract


register_feature_extractor("inception", inception)
