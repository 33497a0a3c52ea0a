"""What `images.py` makes of the less common files, each against a reference outside it: the shown size of every
EXIF orientation (PIL's own `exif_transpose`), 16-bit greyscale in either byte order (65535 is 255), the JPEG draft
scale (the short side stays >= the target) and a colour key beside a colour profile (still white)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from megadalle.data.fields import decode_field
from megadalle.data.images import draft_for, to_rgb, upright_size
from tests.data.image_files import encoded, swapped_primaries_profile


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_upright_size_is_the_shown_size_for_every_exif_orientation(orientation, fmt):
    """Orientations 5 (transpose) and 7 (transverse) turn the image a quarter too, not only 6 and 8: `prepare`
    records this size and decides min_side and upscaling on it. PIL's TIFF reader turns the image itself (its
    size swapped twice, a TIFF's json said 32x64 of a 64x32 picture)."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    data = encoded(Image.linear_gradient("L").resize((40, 20)).convert("RGB"), fmt, exif=exif)
    assert opened(data).getexif()[0x0112] == orientation
    shown = ImageOps.exif_transpose(opened(data)).size
    assert shown == ((20, 40) if orientation >= 5 else (40, 20))  # what PIL shows, as EXIF defines it
    assert upright_size(opened(data)) == shown
    assert to_rgb(opened(data)).size == shown


def grey_ramp_file(mode: str, fmt: str) -> bytes:
    """A 16x16 image of 257*k for k = 0..255 (k at row k // 16, column k % 16), written as `fmt`; PIL reads it
    back as `mode` (a big-endian TIFF for I;16B, whose pixels PIL keeps in file order)."""
    values = np.arange(256, dtype=np.uint16) * 257
    return encoded(Image.frombytes(mode, (16, 16), values.astype(">u2" if mode.endswith("B") else "<u2").tobytes()),
                   fmt)


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_16_bit_greyscale_comes_out_at_exactly_a_257th(mode, fmt):
    """65535 is white and 257*k is grey k exactly (plain arithmetic: 65535 / 255 = 257). A factor of 1/256 makes
    257*k come out k + k/256, one level too bright from k = 129 on, which a single mid grey cannot show."""
    data = grey_ramp_file(mode, fmt)
    assert opened(data).mode == mode  # the mode PIL really gives such a file, converted by deep_grey_to_8_bits
    expected = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for rgb in (np.asarray(to_rgb(opened(data))), np.asarray(decode_field(fmt.lower(), data))):
        assert rgb.shape == (16, 16, 3)
        for channel in range(3):
            assert np.array_equal(rgb[..., channel], expected), np.argwhere(rgb[..., channel] != expected)[:4]


@pytest.mark.parametrize("size, drafted", [((1024, 256), (256, 64)), ((512, 512), (64, 64))])
def test_a_jpeg_is_drafted_no_smaller_than_the_target_short_side(size, drafted):
    """A JPEG decodes at 1/2, 1/4 or 1/8 scale: a 1024x256 one for 64 px may go down to 1/4 (256x64), not 1/8
    (128x32, then upscaled: a blurrier image); a 512x512 one goes all the way to 1/8."""
    img = opened(encoded(Image.linear_gradient("L").resize(size).convert("RGB"), "JPEG"))
    draft_for(img, 64)
    img.load()
    assert min(img.size) >= 64
    assert img.size == drafted  # the smallest of libjpeg's scales whose short side is still >= 64


def test_a_colour_key_beside_a_colour_profile_is_still_white_and_the_rest_converted():
    """The key names a colour in the file's own space: converted to sRGB first, no pixel would match it any more
    and the transparent ones would show (`to_rgb` promises white). The key becomes alpha first, then the profile
    applies: the kept pixels stayed in the file's space (blue under primaries that swap red and blue)."""
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)  # keyed
    arr[:, 4:] = (0, 0, 255)  # kept
    data = encoded(Image.fromarray(arr), "PNG", icc_profile=swapped_primaries_profile(), transparency=(255, 0, 0))
    assert opened(data).info["transparency"] == (255, 0, 0) and opened(data).info["icc_profile"]
    for rgb in (np.asarray(to_rgb(opened(data))), np.asarray(decode_field("png", data))):
        assert rgb[:, :4].min() == 255
        assert rgb[:, 4:, 0].min() > 200 and rgb[:, 4:, 2].max() < 50  # the file's blue is sRGB's red
