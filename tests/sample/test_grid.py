"""Saved samples are the model's pixels alone; grids keep white gutters between tiles."""
import json

import numpy as np
import torch
from PIL import Image

from megadalle.sample import Generated, write_outputs
from megadalle.sampling.grid import make_grid, save_image, to_uint8


def test_save_image_writes_exactly_the_pixels(tmp_path):
    image = torch.rand(3, 12, 12)
    path = save_image(image, tmp_path / "deep" / "x.png")
    saved = np.asarray(Image.open(path))
    assert saved.shape == (12, 12, 3)
    np.testing.assert_array_equal(saved, to_uint8(image[None])[0])


def test_generate_outputs_samples_without_frame_and_grid_with_gutters(tmp_path):
    images = torch.rand(3, 3, 8, 8) * 0.5  # no white pixels, so any frame would show
    write_outputs(Generated(images, [2, 0, 1], [0.1, 0.2, 0.3]), tmp_path, "a prompt", {})
    for rank in range(3):
        saved = np.asarray(Image.open(tmp_path / f"sample_{rank:02d}.png"))
        np.testing.assert_array_equal(saved, to_uint8(images[rank:rank + 1])[0])
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    np.testing.assert_array_equal(grid, np.asarray(make_grid(images)))
    assert (grid[:2] == 255).all() and (grid[:, 10:12] == 255).all()  # outer border and gutter between tiles
    np.testing.assert_array_equal(grid[2:10, 2:10], to_uint8(images[:1])[0])
    assert json.loads((tmp_path / "scores.json").read_text())["kept"][0]["file"] == "sample_00.png"
