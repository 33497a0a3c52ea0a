"""ImageBatches draws each sample's caption line at its own stream position (data/batches.py `sample_rng`).

`caption` is the line CLIP trains on. A draw seeded without the position gave every sample of a multi-caption image
the same line at every position and epoch: CLIP saw one fixed caption of each image and never the others. The
position tests (test_position_rng.py) read TokenBatches only; this reads ImageBatches the same way.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from megadalle.data.batches import ImageBatches

LINES = [f"a {colour} square" for colour in "red blue green black white grey pink brown".split()]
POSITIONS = range(64)


def sample() -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return {"__key__": "000001", "png": buf.getvalue(), "txt": "\n".join(LINES).encode()}


def captions(positions, seed: int = 0) -> list[str]:
    """The captions ImageBatches picks for one 8-line sample read at each of `positions`."""
    return ImageBatches(8)([sample()] * len(positions), np.asarray(positions), seed)["caption"]


def test_every_line_is_drawn_each_position_by_its_own_seeded_draw():
    """Over 64 positions all 8 lines come up, each position's line the documented (seed, position) draw (by hand
    with numpy), the same when read again in another order."""
    picked = captions(list(POSITIONS))
    expected = [LINES[np.random.default_rng([0, p]).integers(len(LINES))] for p in POSITIONS]
    assert picked == expected
    assert set(picked) == set(LINES), f"only {sorted(set(picked))} drawn over {len(POSITIONS)} positions"
    assert captions(list(POSITIONS)[::-1])[::-1] == picked
