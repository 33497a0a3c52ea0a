"""A pixel check of the demo's images, independent of every learned model.

The demo's accuracy must not be judged by its own CLIP (a model grading itself), so this reads
the pixels. A pixel's "ink" is its distance from the white background: the shape is the pixels
with at least half the image's strongest ink, its colour the palette colour whose ink points the
same way (a hue test, so a decoder that washes colours out is not punished for paleness); its
shape from where that colour's mass sits in its bounding box and how much of the box it fills; its
position from its centroid.

The demo's triangles stand on their base, so their mass sits low: the centroid lies 2/3 of the way
down the box (circles and squares: 1/2), and it stays low when the shape is drawn in steps, as a dVAE
with 4-pixel cells draws it (a stepped triangle fills 0.6-1 of its box, as much as a circle does).
Of the rest, a square fills its box (~1) and a circle ~pi/4 of it.

A picture of two objects does not show the caption's one: judged by its dominant colour alone, a caption's
shape with a second shape of another colour beside it passed. So ink outside the shape's box (grown by a
pixel) fails the picture once it reaches a tenth of the shape's pixels. Inside the box, ink of another hue is
the shape's own: a soft decoder's rim drifting in hue (a red edge read as yellow), or a patch of it painted
off-colour, which the shape and colour tests judge as before. In 400 pictures of two shapes, drawn, in 2- or
4-pixel steps or through the demo's dVAE, at least 0.17 of the shape's pixels lay outside that box; 384 single
shapes drawn the same four ways left none there (benchmarks/demo_judge_check.py). A second shape of the same
colour joins the shape's mask instead, and is left to the shape and position tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from megadalle.demo_data import COLOURS, POSITIONS, SHAPES, Scene

PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255
TRIANGLE_DEPTH = 0.57
"""Between a triangle's centroid depth (2/3 drawn smoothly, >= 0.6 in 2-pixel steps) and a circle's (1/2)."""


def judge(image: torch.Tensor, min_pixels: int = 6, min_ink: float = 0.15,
          second_share: float = 0.1) -> Scene | None:
    """The scene an image [3, S, S] in [0, 1] shows, or None when no shape stands out or a second object does
    (ink outside the shape's box, at least `second_share` of its pixels; inf: the dominant colour alone)."""
    ink = 1 - image.permute(1, 2, 0).reshape(-1, 3).float()  # distance from the white background, per channel
    strength = ink.norm(dim=-1)
    # Half the strongest ink is the shape's outline even when a soft decoder washes colours out.
    foreground = strength > max(min_ink, 0.5 * float(strength.max()))
    if foreground.sum() < min_pixels:
        return None
    hue = F.normalize(ink, dim=-1) @ F.normalize(1 - PALETTE, dim=-1).t()
    label = hue.argmax(-1)
    colour_index = int(torch.bincount(label[foreground], minlength=len(PALETTE)).argmax())
    size = image.shape[-1]
    mask = (foreground & (label == colour_index)).view(size, size)
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    outside = ink_outside(foreground.view(size, size), top, bottom, left, right)
    if outside >= max(min_pixels, second_share * float(mask.sum())):
        return None
    height, width = bottom - top + 1, right - left + 1
    fill = float(mask.sum()) / (height * width)
    ys, xs = mask.nonzero(as_tuple=True)
    depth = float(ys.float().mean() + 0.5 - top) / height  # the centroid's depth in the box, 0 (top) to 1
    shape = "triangle" if depth > TRIANGLE_DEPTH else "square" if fill > 0.88 else "circle"
    cy, cx = ys.float().mean() / size, xs.float().mean() / size
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return Scene(list(COLOURS)[colour_index], shape, position)


def ink_outside(foreground: torch.Tensor, top: int, bottom: int, left: int, right: int) -> int:
    """Foreground pixels [S, S] outside the box top..bottom x left..right grown by a pixel (the rim a soft
    decoder blurs past the shape's own mask)."""
    outside = foreground.clone()
    outside[max(top - 1, 0):bottom + 2, max(left - 1, 0):right + 2] = False
    return int(outside.sum())


ATTRIBUTES = ("colour", "shape", "position")
"""What a caption asks for; the demo's headline judges all three, its side figure colour and shape only."""
CHOICES = {"colour": len(COLOURS), "shape": len(SHAPES), "position": len(POSITIONS)}


def agrees(seen: Scene | None, scene: Scene, attributes: tuple[str, ...] = ATTRIBUTES) -> bool:
    """Whether a judged scene (None: nothing drawn) has the caption's `attributes`."""
    return seen is not None and all(getattr(seen, a) == getattr(scene, a) for a in attributes)


def matches(image: torch.Tensor, scene: Scene, attributes: tuple[str, ...] = ATTRIBUTES) -> bool:
    """Whether the image shows the caption's `attributes` (all of colour, shape and position by default)."""
    return agrees(judge(image), scene, attributes)


def chance(attributes: tuple[str, ...] = ATTRIBUTES) -> float:
    """Accuracy of guessing the judged attributes uniformly at random (1/48 for all three)."""
    return 1 / math.prod(CHOICES[a] for a in attributes)
