"""The demo's dVAE check (megadalle.demo_recon.check_dvae) judged through stand-in dVAEs whose reconstructions are
known: the check must grade position too (the Transformer draws from these codes, so a dVAE that moves shapes
caps the headline's position accuracy), and draw its pictures from its seed (each demo seed checks fresh ones)."""
from types import SimpleNamespace

import pytest
import torch

from megadalle.demo_data import all_scenes
from megadalle.demo_recon import check_dvae

SIZE = 32


class Lookup:
    """A dVAE stand-in: each image's code is its index among those seen, decoded as `redraw` of that image."""

    def __init__(self, redraw=lambda image: image):
        self.cfg = SimpleNamespace(vocab_size=4096)
        self.seen: list[torch.Tensor] = []
        self.redraw = redraw

    def encode(self, images):
        start = len(self.seen)
        self.seen.extend(images)
        return torch.arange(start, start + len(images)).view(-1, 1, 1)

    def decode_codes(self, codes):
        return torch.stack([self.redraw(self.seen[int(c)]) for c in codes.view(-1)])


def test_a_faithful_dvae_keeps_the_scenes_and_a_moving_one_keeps_none():
    """Every shape moved to the opposite corner, colour and shape intact: no reconstruction shows its scene."""
    faithful = check_dvae(Lookup(), SIZE, per_scene=1, seed=0, batch_size=20)  # batches of 20, the last short
    assert faithful["images"] == len(all_scenes()) and faithful["reconstructions_kept"] >= 0.95
    moved = check_dvae(Lookup(lambda image: image.roll((SIZE // 2, SIZE // 2), dims=(1, 2))), SIZE, 1, seed=0)
    assert moved["reconstructions_kept"] == 0


@pytest.mark.parametrize("other_seed", [0, 1])
def test_the_check_draws_its_pictures_from_its_seed(other_seed):
    """The same seed the same pictures; another seed other pictures (the demo checks with seed + 1)."""
    first, second = Lookup(), Lookup()
    check_dvae(first, SIZE, per_scene=1, seed=0)
    check_dvae(second, SIZE, per_scene=1, seed=other_seed)
    same = all(torch.equal(a, b) for a, b in zip(first.seen, second.seen))
    assert len(first.seen) == len(second.seen) == len(all_scenes()) and same == (other_seed == 0)
