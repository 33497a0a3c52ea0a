"""The demo's data set: one coloured shape at a position per image, with its caption.

Small enough to learn on a CPU in minutes, yet it asks the whole pipeline for what DALL-E does:
bind a colour and a shape from the caption and put them where the caption says. Each caption
combination (colour, shape, position) comes with jittered size and placement; a few whole
combinations are held out of training so the demo can show captions the model never saw.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230), "yellow": (235, 205, 20)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75),
             "bottom right": (0.75, 0.75)}
BACKGROUND = (255, 255, 255)
MAX_HOLDOUT = len(COLOURS) * len(SHAPES)
"""Held-out scenes that can share no two attributes (one per colour and shape pair; 4 positions >= 4 colours)."""


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} at the {self.position}"


def all_scenes() -> list[Scene]:
    return [Scene(c, s, p) for c, s, p in product(COLOURS, SHAPES, POSITIONS)]


def split_scenes(n_holdout: int, seed: int) -> tuple[list[Scene], list[Scene]]:
    """(training scenes, held-out scenes): no two held-out scenes share two attributes, so every pair of a
    held-out caption's attributes (its colour and shape, colour and position, shape and position) is still
    shown in training, in other scenes; only the combination of all three is new.

    The held-out scenes come from a Latin design, position = (colour + shape) mod 4 over shuffled lists,
    which has that property for all its 12 scenes; the seed picks the lists' order and which ones are kept.
    """
    if not 0 <= n_holdout <= MAX_HOLDOUT:
        raise ValueError(f"n_holdout={n_holdout} must be in [0, {MAX_HOLDOUT}]")
    rng = random.Random(seed)
    colours, shapes, positions = (rng.sample(list(names), len(names)) for names in (COLOURS, SHAPES, POSITIONS))
    design = [Scene(c, s, positions[(i + j) % len(positions)]) for i, c in enumerate(colours)
              for j, s in enumerate(shapes)]
    held = rng.sample(design, n_holdout)
    return [s for s in all_scenes() if s not in held], held


def render(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """The scene at `size` px: a shape about 0.4 of the side (big enough that a 4x-downsampling dVAE keeps its
    outline), its centre jittered a little inside its quadrant."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    half = size * rng.uniform(0.18, 0.22)
    fx, fy = POSITIONS[scene.position]
    cx = fx * size + rng.uniform(-0.03, 0.03) * size
    cy = fy * size + rng.uniform(-0.03, 0.03) * size
    box = [cx - half, cy - half, cx + half, cy + half]
    colour = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse(box, fill=colour)
    elif scene.shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=colour)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as [3, S, S] float in [0, 1], the models' and the judge's layout."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def write_dataset(folder: str | Path, scenes: list[Scene], per_scene: int, size: int, seed: int) -> Path:
    """`per_scene` images of each scene as `NNNNNN.png` + `NNNNNN.txt` (the caption) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    index = 0
    for _ in range(per_scene):
        for scene in scenes:
            render(scene, size, rng).save(folder / f"{index:06d}.png")
            (folder / f"{index:06d}.txt").write_text(scene.caption + "\n")
            index += 1
    return folder
