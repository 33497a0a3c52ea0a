"""A pixel check of the demo's images, independent of every learned model.

The demo's accuracy must not be judged by its own CLIP (a model grading itself), so this reads
the pixels: each pixel is labelled with its nearest reference colour (the white background or a
palette colour); the shape's colour is the most frequent palette label; its shape follows from
how much of its bounding box that colour fills (square ~1, circle ~pi/4, triangle ~1/2); its
position from its centroid.
"""
from __future__ import annotations

import torch

from megadalle.demo_data import COLOURS, POSITIONS, Scene

PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255


def judge(image: torch.Tensor, min_pixels: int = 6) -> Scene | None:
    """The scene an image [3, S, S] in [0, 1] shows, or None when no shape stands out."""
    pixels = image.permute(1, 2, 0).reshape(-1, 3).float()
    # Each pixel goes to its nearest reference colour (white or a palette colour): on a blurred
    # edge that is the 50% contour, so outlines survive a soft decoder.
    nearest = torch.cdist(pixels, torch.cat([torch.ones(1, 3), PALETTE])).argmin(-1)
    if (nearest > 0).sum() < min_pixels:
        return None
    colour_index = int(torch.bincount(nearest[nearest > 0] - 1, minlength=len(PALETTE)).argmax())
    size = image.shape[-1]
    mask = (nearest == colour_index + 1).view(size, size)
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    fill = float(mask.sum()) / (height * width)
    shape = "square" if fill > 0.88 else "circle" if fill > 0.64 else "triangle"
    ys, xs = mask.nonzero(as_tuple=True)
    cy, cx = ys.float().mean() / size, xs.float().mean() / size
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return Scene(list(COLOURS)[colour_index], shape, position)


def matches(image: torch.Tensor, scene: Scene) -> bool:
    """Whether the image shows the caption's colour and shape (the demo's accuracy criterion)."""
    seen = judge(image)
    return seen is not None and seen.colour == scene.colour and seen.shape == scene.shape


def chance() -> float:
    """Accuracy of guessing colour and shape uniformly at random."""
    from megadalle.demo_data import SHAPES

    return 1 / (len(COLOURS) * len(SHAPES))
