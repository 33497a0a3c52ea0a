"""Image geometry shared by `prepare` (once, offline) and the loaders (only if sizes differ)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps


def draft_for(img: Image.Image, size: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the short side stays >= size (much faster)."""
    if img.format == "JPEG":
        w, h = img.size
        scale = size / min(w, h)
        img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white (black would be an artefact the model learns)."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info or img.mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale so the short side is `size` (bicubic, antialiased), then cut the centred square."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor [3, H, W] in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
