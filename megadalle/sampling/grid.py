"""Write samples as one PNG grid and as single images, the forms people and tools look at results in.

A grid has white gutters between its tiles so people can tell samples apart; a single image is written
bare, pixel for pixel, because tools that read samples (a classifier, FID) would otherwise measure a
frame that the model never drew. Each PNG is written whole or not at all (`write_png`)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from megadalle.data import atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, S, S] in [0, 1] -> [N, S, S, 3] uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images row by row, `columns` per row (about square by default), with white gutters."""
    n, _, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(to_uint8(images)):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return Image.fromarray(canvas)


def write_png(image: Image.Image, path: str | Path) -> Path:
    """`image` as the PNG `path`, under a temporary name until complete (atomic.replacing): PIL writes in place, and
    a full disk left a truncated PNG (its close flushes last, after PIL's own clean-up) that looks like a sample."""
    with atomic.replacing(path) as tmp, tmp.open("wb") as file:
        image.save(file, format="PNG")
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> Path:
    return write_png(make_grid(images, columns), path)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """One image [3, S, S] in [0, 1] as an S x S PNG, exactly its pixels (no frame)."""
    return write_png(Image.fromarray(to_uint8(image[None])[0]), path)
