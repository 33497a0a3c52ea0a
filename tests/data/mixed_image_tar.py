"""A tar from elsewhere whose samples each carry another image format, as img2dataset writes them.

A helper, not a test module: the loader and encode both read such a folder, and neither test module should be
the other's library.
"""
import io

import webdataset as wds
from PIL import Image


def mixed_image_tar(root, n=6, size=16):
    """A tar from elsewhere whose samples carry jpg, png, webp, gif or tif (img2dataset keeps each format)."""
    root.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(root / "00000.tar")) as sink:
        for i in range(n):
            fmt = ("jpg", "png", "webp", "gif", "tif", "tiff")[i % 6]
            buf = io.BytesIO()
            Image.new("RGB", (size, size), (40 * i, 255 - 40 * i, 90)).save(
                buf, format={"jpg": "JPEG", "tif": "TIFF"}.get(fmt, fmt))
            sink.write({"__key__": f"sub/dir/k{i}", fmt: buf.getvalue(), "txt": f"sample {i}"})
    return root
