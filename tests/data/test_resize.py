"""The centre crop of `prepare` and the loaders: only the square is computed (a thin strip blew memory up), with
the pixels of resizing the whole image and cutting the square from it, within RESIZE_TOLERANCE grey levels."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from megadalle.data.images import RESIZE_TOLERANCE, resize_center_crop, rows_first


def whole_then_crop(img: Image.Image, size: int) -> Image.Image:
    """The earlier way: the whole image scaled to a short side of `size`, then the centred square cut from it."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Every pixel independent: what shows a pass made in another order (8-bit rounding between the passes)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise blurred to the smoothness of a photograph's detail."""
    return noise(width, height, seed).filter(ImageFilter.GaussianBlur(1))


def line_art(width: int, height: int, seed: int = 0) -> Image.Image:
    """Black one-pixel lines across and down a white page: hard edges, where bicubic overshoots most."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width, 3), 255, np.uint8)
    page[rng.integers(0, height, max(1, height // 7))] = 0
    page[:, rng.integers(0, width, max(1, width // 7))] = 0
    return Image.fromarray(page)


SHAPES = [(300, 80), (80, 300), (1000, 750), (750, 1000), (641, 479), (479, 641), (33, 31), (17, 600), (600, 17),
          (4000, 300), (300, 4000), (256, 257), (300, 1000), (1000, 300)]
"""Landscape and portrait, enlarged and reduced, by more than PIL's reducing gap (blocks averaged first) or less."""


@pytest.mark.parametrize("width,height", SHAPES)
@pytest.mark.parametrize("size", [32, 256])
@pytest.mark.parametrize("make", [photo_like, noise, line_art])
def test_the_square_has_the_pixels_of_resizing_the_whole_image(make, width, height, size):
    img = make(width, height)
    got = np.asarray(resize_center_crop(img, size)).astype(int)
    assert got.shape == (size, size, 3)
    assert np.abs(got - np.asarray(whole_then_crop(img, size)).astype(int)).max() <= RESIZE_TOLERANCE


@pytest.mark.parametrize("source,target", [((300, 1000), (256, 853)), ((1000, 300), (853, 256)),
                                           ((100, 100), (70, 20)), ((100, 100), (60, 20)), ((100, 200), (60, 100)),
                                           ((100, 200), (50, 100)), ((64, 64), (100, 128)), ((100, 200), (90, 100))])
def test_rows_first_is_the_order_pil_resizes_in(source, target):
    """Pillow's rule, checked against Pillow itself: each order made as two one-axis resizes, of which only the one
    `rows_first` names gives the whole resize's pixels (another Pillow that changes the rule fails here)."""
    img, b = noise(*source), Image.Resampling.BICUBIC
    whole = np.asarray(img.resize(target, b))
    if rows_first(source, target):
        passes = img.resize((source[0], target[1]), b).resize(target, b)
    else:
        passes = img.resize((target[0], source[1]), b).resize(target, b)
    assert np.array_equal(np.asarray(passes), whole)


PEAK_RSS = """
import resource, sys
from PIL import Image
from megadalle.data.images import resize_center_crop
strip = Image.new("RGB", (1, 100_000), (10, 200, 30))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = resize_center_crop(strip, 32)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(out.size, out.getpixel((16, 16)), grown // 1024)
"""


def test_a_1x100000_strip_is_cropped_without_scaling_it_whole():
    """Scaled whole, the strip became 32x3200000 (300 MB) before the crop: ru_maxrss (KiB) would show it."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS], capture_output=True, text=True, check=True).stdout.split()
    assert out[:5] == ["(32,", "32)", "(10,", "200,", "30)"]
    assert int(out[5]) < 50  # MiB
