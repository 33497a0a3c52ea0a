"""The demo judge's thresholds, each pinned at its boundary with pictures painted pixel by pixel (the fill and the
ink share computed here with numpy, not by the judge): a slip in one moves the demo's headline accuracy without
any test of rendered scenes noticing, since rendered shapes sit far from every boundary."""
import numpy as np
import pytest
import torch

from megadalle.demo_data import COLOURS, Scene
from megadalle.demo_judge import judge

SIZE = 32


def ink_of(colour: str) -> np.ndarray:
    """A palette colour's ink: its distance from the white background, per channel."""
    return 1 - np.array(COLOURS[colour], dtype=np.float64) / 255


def picture(*layers: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    """A white [3, SIZE, SIZE] image with each (mask [SIZE, SIZE], ink [3]) layer painted over it."""
    ink = np.zeros((SIZE, SIZE, 3))
    for mask, colour_ink in layers:
        ink[mask] = colour_ink
    return torch.from_numpy(1 - ink).permute(2, 0, 1).float()


def square_with_cut_corners(cut: list[int]) -> np.ndarray:
    """A 20x20 square at rows/columns 2..21 with each corner cut by a staircase (`cut[i]` pixels off row i from
    the corner), mirrored on both axes so the centroid stays at the box's centre."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[2:22, 2:22] = True
    for i, n in enumerate(cut):
        for row in (2 + i, 21 - i):
            mask[row, 2:2 + n] = mask[row, 22 - n:22] = False
    return mask


def fill(mask: np.ndarray) -> float:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return mask.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))


@pytest.mark.parametrize("cut, expected_fill, shape", [([4, 3, 2, 1], 0.90, "square"), ([5, 4, 3, 1], 0.87, "circle"),
                                                        ([4, 3, 2, 1, 1], 0.89, "square")])
def test_a_square_with_soft_corners_is_a_square_down_to_a_fill_of_0_88(cut, expected_fill, shape):
    """A decoder rounds a square's corners: filling 0.9 of its box it is still a square (a circle fills pi/4 ~
    0.785); below 0.88 it is a circle."""
    mask = square_with_cut_corners(cut)
    assert fill(mask) == pytest.approx(expected_fill)
    assert judge(picture((mask, ink_of("red")))) == Scene("red", shape, "top left")


def square(top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def faint(colour: str, share: float, strongest: np.ndarray) -> np.ndarray:
    """`colour`'s hue with `share` of the strongest ink's strength (its distance from white)."""
    ink = ink_of(colour)
    return ink / np.linalg.norm(ink) * share * np.linalg.norm(strongest)


@pytest.mark.parametrize("share, fails", [(0.45, False), (0.55, True)])
def test_ink_below_half_the_strongest_is_background(share, fails):
    """The shape is the pixels with at least half the strongest ink: a faint blue smudge (20 pixels, a fifth of
    the red square's 100) at 45% is background, and the picture shows the red square; at 55% it is a second
    object, and the picture fails."""
    red = ink_of("red")
    smudge = square(24, 24, 5)
    smudge[24] = False  # 4 x 5 = 20 pixels, far outside the square's grown box
    assert smudge.sum() == 20
    image = picture((square(3, 3, 10), red), (smudge, faint("blue", share, red)))
    strength = np.linalg.norm(1 - image.permute(1, 2, 0).numpy().astype(np.float64), axis=-1)
    assert strength[26, 26] / strength.max() == pytest.approx(share, abs=1e-3)
    seen = judge(image)
    assert seen is None if fails else seen == Scene("red", "square", "top left")


@pytest.mark.parametrize("stray, fails", [(9, False), (10, True)])
def test_a_second_object_of_a_tenth_of_the_shape_fails_the_picture(stray, fails):
    """Ink outside the shape's box grown by a pixel fails the picture from a tenth of the shape's pixels on: 10
    blue pixels beside a 100-pixel red square are a second object, 9 are not."""
    blue = np.zeros((SIZE, SIZE), dtype=bool)
    blue[28, 2:2 + stray] = True  # row 28: well below the square's rows 3..12 grown by one
    seen = judge(picture((square(3, 3, 10), ink_of("red")), (blue, ink_of("blue"))))
    assert seen is None if fails else seen == Scene("red", "square", "top left")
