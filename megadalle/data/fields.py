"""Encode and decode the fields of a shard sample, by name, without ever unpickling.

A webdataset sample is a group of tar members `<key>.<field>`; the field name (everything after
the first dot of the member's base name) says how its bytes are encoded. webdataset's default
`.decode()` unpickles `.pyd`/`.pkl`/`.pickle` members and `torch.load`s `.pth` ones, so a shard
from the internet could run code. Here only the fields a reader names are decoded, each by a
handler below; a field with no safe handler (a pickle above all) is refused with an error.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import features

CODES_FIELD = "codes.npy"
"""The field of a token shard's sample that holds its dVAE codes (`encode`)."""
IMAGE_FIELDS = ("jpg", "jpeg", "jfif", "jpe", "png", "webp", "ppm", "bmp", "gif", "tif", "tiff",
                *(("avif",) if features.check("avif") else ()))
"""Extensions read as images: what PIL decodes among photo formats (`.jfif`/`.jpe` are JPEG; `.avif` where this
PIL is built with AVIF, as wheels from 11.3 on are). Whatever the source's, `prepare` writes its `format`."""
UNSAFE_FIELDS = ("pyd", "pkl", "pickle", "pth", "pt", "mp", "msgpack")
"""Extensions whose usual decoders execute or construct arbitrary objects: never decoded."""


class UnsafeFieldError(ValueError):
    """A field was asked for that can only be decoded by running code from the shard."""


def extension(field: str) -> str:
    """The last part of a field name: `codes.npy` -> `npy`, `jpg` -> `jpg`."""
    return field.rsplit(".", 1)[-1].lower()


def split_member(name: str) -> tuple[str, str]:
    """`dir/abc.codes.npy` -> (`dir/abc`, `codes.npy`), webdataset's key/field rule; the field in lower case,
    so a tar of a camera's `IMG_1.JPG` + `IMG_1.TXT` holds the jpg and txt every reader asks for (it was
    skipped whole as no_media). Keys keep their case.

    A base name with nothing before its first dot (macOS tar's AppleDouble `._IMG_1.jpg` beside each file,
    `.DS_Store`) has no key: it gets no field, as one without a dot, so `walk` passes over it as webdataset
    does (its key `./` broke the adjacency of every real sample around it)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:
        return name, ""
    return name[:dot], name[dot + 1:].lower()


def decode_image(data: bytes):
    """An RGB PIL image, fully loaded (so a truncated file fails here, not later), converted as `prepare`
    converts its inputs (deep greyscale scaled, transparency on white)."""
    from PIL import Image

    from megadalle.data.images import to_rgb

    img = Image.open(io.BytesIO(data))
    img.load()
    return to_rgb(img)


def decode_npy(data: bytes) -> np.ndarray:
    """A raw array; object arrays (which need pickle) are refused by `allow_pickle=False`."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_field(field: str, data: bytes) -> Any:
    """Decode one field's bytes by its extension; unknown or unsafe extensions raise."""
    ext = extension(field)
    if ext in UNSAFE_FIELDS:
        raise UnsafeFieldError(f"field {field!r} would need unpickling; megadalle never decodes it")
    if ext in IMAGE_FIELDS:
        return decode_image(data)
    if ext in ("txt", "text", "caption"):
        return data.decode("utf-8")
    if ext == "json":
        return json.loads(data.decode("utf-8"))
    if ext == "npy":
        return decode_npy(data)
    if ext in ("cls", "cls2", "index", "id"):
        return int(data.decode("ascii"))
    raise UnsafeFieldError(f"field {field!r}: no decoder for extension {ext!r} (known: images, txt, json, npy, cls)")


def encode_field(field: str, value: Any) -> bytes:
    """Bytes for a field value: bytes pass through, str is utf-8, dict/list is JSON, ndarray is .npy."""
    ext = extension(field)
    if ext in UNSAFE_FIELDS:
        raise UnsafeFieldError(f"field {field!r}: megadalle writes no pickled fields")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        if ext != "npy":
            raise ValueError(f"field {field!r}: an array must go into a field ending in .npy")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()
    if ext == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and ext in ("cls", "cls2", "index", "id"):
        return str(value).encode("ascii")
    raise TypeError(f"field {field!r}: cannot encode a {type(value).__name__}; pass bytes, str, dict or ndarray")
