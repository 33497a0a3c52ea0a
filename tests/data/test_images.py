"""One RGB conversion for `prepare` and for shards read from elsewhere: deep greyscale scaled to 8 bits,
transparency composited on white, the same pixels whichever path decodes the image."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from megadalle.data.fields import decode_field
from megadalle.data.images import to_rgb
from tests.data.image_files import encoded, swapped_primaries_profile


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def both_paths(data: bytes) -> list[np.ndarray]:
    """The pixels `prepare` (to_rgb of the opened file) and a shard reader (decode_field) make of `data`."""
    return [np.asarray(to_rgb(Image.open(io.BytesIO(data)))), np.asarray(decode_field("png", data))]


def test_a_16_bit_greyscale_png_is_scaled_not_clipped_to_white():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    data = png(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    for rgb in both_paths(data):
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_modes_in_either_byte_order(mode):
    img = Image.new(mode, (4, 4), 257 * 100)
    assert np.asarray(to_rgb(img)).max() == np.asarray(to_rgb(img)).min() == 100


def test_32_bit_integer_images_are_read_as_16_bit_values_and_float_images_as_0_to_1():
    ints = Image.fromarray(np.array([[0, 257 * 10, 65535, 70000]], np.int32))
    assert ints.mode == "I"
    assert np.asarray(to_rgb(ints))[0, :, 0].tolist() == [0, 10, 255, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], np.float32))
    assert floats.mode == "F"
    assert np.asarray(to_rgb(floats))[0, :, 1].tolist() == [0, 128, 255, 255, 0, 0]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_white_on_both_paths(mode):
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert(mode)
    for rgb in both_paths(png(img)):
        assert rgb.min() == 255


def test_a_palette_png_with_a_transparent_colour_is_white_on_both_paths():
    img = Image.new("P", (8, 8), 3)
    img.putpalette([0, 0, 0] * 256)
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=3)
    for rgb in both_paths(buf.getvalue()):
        assert rgb.min() == 255


def test_an_rgb_png_with_a_transparent_colour_is_white_there():
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=(10, 20, 30))
    for rgb in both_paths(buf.getvalue()):
        assert rgb.min() == 255


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "P"), ("PNG", "RGBA")])
def test_an_embedded_colour_profile_is_converted_to_srgb_on_both_paths(fmt, mode):
    data = encoded(Image.new("RGB", (16, 16), (255, 0, 0)).convert(mode), fmt, icc_profile=swapped_primaries_profile())
    for rgb in (np.asarray(to_rgb(Image.open(io.BytesIO(data)))), np.asarray(decode_field(fmt.lower(), data))):
        r, g, b = rgb[8, 8].astype(int)
        assert r < 10 and g < 10 and b > 245, rgb[8, 8]
    assert "icc_profile" not in to_rgb(Image.open(io.BytesIO(data))).info


def test_a_broken_colour_profile_leaves_the_pixels_as_they_are():
    data = encoded(Image.new("RGB", (16, 16), (255, 0, 0)), "PNG", icc_profile=b"not a profile at all")
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == b"not a profile at all"
    for rgb in both_paths(data):
        assert rgb[8, 8].tolist() == [255, 0, 0]


def test_a_16_bit_greyscale_png_with_a_transparent_grey_is_white_there_on_both_paths():
    arr = np.full((8, 8), 1000, np.uint16)
    arr[:, 4:] = 1001  # the same 8-bit grey as 1000: only the 16-bit value tells them apart
    data = png(Image.fromarray(arr))
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "I;16"
    buf = io.BytesIO()
    reopened.save(buf, "PNG", transparency=1001)
    for rgb in both_paths(buf.getvalue()):
        assert rgb[:, 4:].min() == 255
        assert rgb[:, :4].max() == round(1000 / 257)
