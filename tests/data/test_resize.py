"""The centre crop of `prepare` and the loaders: only the square is computed (a thin strip blew memory up), with
the pixels of resizing the whole image and cutting the square from it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from megadalle.data.images import resize_center_crop


def whole_then_crop(img: Image.Image, size: int) -> Image.Image:
    """The earlier way: the whole image scaled to a short side of `size`, then the centred square cut from it."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise blurred to the smoothness of a photograph's detail."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1))


@pytest.mark.parametrize("width,height", [(300, 80), (80, 300), (1000, 750), (641, 479), (33, 31), (17, 600),
                                          (4000, 300), (256, 257)])
@pytest.mark.parametrize("size", [32, 256])
def test_the_square_has_the_pixels_of_resizing_the_whole_image(width, height, size):
    img = photo_like(width, height)
    got = np.asarray(resize_center_crop(img, size)).astype(int)
    assert got.shape == (size, size, 3)
    assert np.abs(got - np.asarray(whole_then_crop(img, size)).astype(int)).max() <= 1


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
