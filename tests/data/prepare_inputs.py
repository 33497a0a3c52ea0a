"""Inputs for `prepare` as a user lays them out (an image beside its caption file) and the config it runs with.

A helper, not a test module: the tests of each kind of input (tests/data/test_prepare.py, test_sources.py,
test_captions.py, ...) build their folders alike, and none of those test modules should be another's library.
"""
from __future__ import annotations

from megadalle.config.data import PrepareConfig


def put(folder, name, data: bytes | None = None, caption: str | bytes | None = "a picture"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        path.write_bytes(data)
    if caption is not None:
        txt = path.with_suffix(".txt")
        txt.write_bytes(caption if isinstance(caption, bytes) else caption.encode())
    return path


def config(input, output, **kw) -> PrepareConfig:
    base = dict(image_size=32, min_side=32, max_pixels=200_000, num_workers=0)
    return PrepareConfig(input=str(input), output=str(output), **{**base, **kw})
