"""The caption a sample trains on is drawn uniformly among its caption lines (data/batches.py `pick_caption`).

Prepared samples carry every caption of an image, one per line, so that each epoch may train on another one; a
choice that never reached the last line (an off-by-one in the draw's bound) left a two-caption image trained on its
first caption only, and its second caption never taught. Read at many stream positions, every line must come up,
each about as often as the others.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from megadalle.data.batches import pick_caption, sample_rng

POSITIONS = range(1000, 1240)


def picks(text: str, seed: int = 0) -> Counter:
    return Counter(pick_caption(text, sample_rng(seed, position)) for position in POSITIONS)


@pytest.mark.parametrize("lines", [["a red cat", "a blue dog"], ["one", "two", "three"]], ids=["two", "three"])
@pytest.mark.parametrize("seed", [0, 7])
def test_every_caption_line_is_picked_about_equally_often(lines, seed):
    """Each of n lines is picked Binomial(240, 1/n) times: within 5 standard deviations of 240/n (a chance of
    failing below 1e-6 per line if the draw is uniform), and so never 0 times."""
    counts = picks("\n".join(lines), seed)
    assert set(counts) == set(lines), f"picked {dict(counts)} of {lines}"
    n, p = len(POSITIONS), 1 / len(lines)
    bound = 5 * (n * p * (1 - p)) ** 0.5
    for line in lines:
        assert abs(counts[line] - n * p) <= bound, f"{line!r} picked {counts[line]} of {n} times, expected ~{n * p:.0f}"


def test_only_visible_lines_are_drawn_among_and_a_single_one_always():
    """Blank and space-only lines are no captions (data/captions.py), so they are never drawn and take no share."""
    counts = picks("first\n\n   \nlast\n")
    assert set(counts) == {"first", "last"} and min(counts.values()) > len(POSITIONS) / 4
    assert picks("only one\n\n") == Counter({"only one": len(POSITIONS)})
    assert picks("\n \n") == Counter({"": len(POSITIONS)})


def test_seeds_that_share_their_low_32_bits_draw_other_captions():
    """The position's generator took the seed's low 32 bits alone: seeds s and s + 2**32 drew the same captions (and
    BPE dropout) in other sample orders. A seed below 2**32 draws as it always did."""
    text = "\n".join(f"caption {i}" for i in range(50))
    assert picks(text, 5) != picks(text, 5 + 2**32)
    assert [sample_rng(5, p).integers(1 << 30) for p in (0, 9)] == \
        [np.random.default_rng([5, p]).integers(1 << 30) for p in (0, 9)]
