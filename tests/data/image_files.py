"""Image files made in memory for the image tests: an image encoded as a format, and a hand-made ICC profile
(littleCMS, through PIL, only builds sRGB, LAB and XYZ ones).

A helper, not a test module: test_images.py and test_image_modes.py both need them, and neither test module should
be the other's library."""
from __future__ import annotations

import io
import struct

from PIL import Image


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)


def swapped_primaries_profile() -> bytes:
    """An ICC v2 RGB profile with sRGB's red and blue primaries swapped: a colour space PIL cannot make,
    in which pure red is sRGB's pure blue, so whether the profile is applied shows in one pixel."""
    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2
    tags = [(b"wtpt", xyz_tag(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz_tag(*blue)), (b"gXYZ", xyz_tag(*green)),
            (b"bXYZ", xyz_tag(*red)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249)).ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + table + body
