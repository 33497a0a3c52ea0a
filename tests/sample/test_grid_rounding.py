"""Saved samples round each pixel to the nearest 8-bit level (sampling/grid.py `to_uint8`).

Every PNG megadalle writes (samples, grids, training grids) and every image FID and CLIP read back goes through this
conversion. Truncating instead darkened each pixel by half a level on average and moved a value a hair under a
level (k - 1e-6, as arithmetic in float leaves it) a whole level down, a bias every image-quality number measured.
The expected levels here are hand-built, not read from the code.
"""
from __future__ import annotations

import numpy as np
import torch

from megadalle.sampling.grid import to_uint8

LEVELS = torch.arange(256, dtype=torch.float64)


def converted(values: torch.Tensor) -> np.ndarray:
    """`values` (one per level) as to_uint8 writes them, read back as a flat array in the same order."""
    image = values.float().view(1, 1, 16, 16).expand(1, 3, 16, 16)
    pixels = to_uint8(image)
    assert pixels.shape == (1, 16, 16, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    return pixels[0, :, :, 0].reshape(-1)


def test_each_level_and_its_neighbourhood_goes_to_the_nearest_level():
    expected = np.arange(256)
    np.testing.assert_array_equal(converted(LEVELS / 255), expected)
    np.testing.assert_array_equal(converted((LEVELS - 0.4).clamp(min=0) / 255), expected)
    np.testing.assert_array_equal(converted((LEVELS + 0.4) / 255), expected)
    np.testing.assert_array_equal(converted((LEVELS + 0.6).clamp(max=255) / 255), np.minimum(expected + 1, 255))


def test_values_outside_the_unit_range_are_clamped():
    np.testing.assert_array_equal(converted(torch.tensor([-3.0, -1e-3, 1 + 1e-3, 7.0]).repeat(64)),
                                  [0, 0, 255, 255] * 64)
