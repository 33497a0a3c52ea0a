"""What DVAE's public methods take: pixels in [0, 1] as floats, codes as [B, h, w] integers, and a config its
constructor checks as Transformer's does (hunt P5, P9, P10)."""
from __future__ import annotations

import pytest
import torch

from megadalle.config import ConfigError
from megadalle.config.clip import ClipConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.models.clip import CLIP
from megadalle.models.dvae import DVAE

CFG = dict(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=32, n_init=8)


@pytest.fixture(scope="module")
def dvae():
    torch.manual_seed(0)
    return DVAE(DVAEConfig(**CFG)).eval()


def test_encode_refuses_pixels_outside_zero_to_one(dvae):
    """uint8 or 0-255 images gave other codes in silence (49% equal on the hunt's dVAE)."""
    images = torch.rand(2, 3, 16, 16)
    assert dvae.encode(images).shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"^images of dtype torch.uint8: expected floating pixels in \[0, 1\]"):
        dvae.encode((images * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"^images in \[.*\]: expected pixels in \[0, 1\] \(0-255 pixels"):
        dvae.encode(images * 255)
    with pytest.raises(ValueError, match=r"expected pixels in \[0, 1\]"):
        dvae.encode(images - 0.5)


def test_decode_codes_refuses_flat_and_float_codes_by_name(dvae):
    """Flat codes [B, h*w], as the sampler returns them, failed in a permute; float codes were truncated."""
    codes = torch.randint(0, 32, (2, 8, 8))
    assert dvae.decode_codes(codes).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"^codes of shape \[2, 64\]: expected \[B, h, w\] .*megadalle.sample.decode"):
        dvae.decode_codes(codes.flatten(1))
    with pytest.raises(ValueError, match=r"^codes of dtype torch.float32: expected integer codes$"):
        dvae.decode_codes(codes.float() + 0.7)


@pytest.mark.parametrize("make,key", [
    (lambda: DVAE(DVAEConfig(**{**CFG, "image_size": 33})), "dvae.image_size=33"),
    (lambda: DVAE(DVAEConfig(**{**CFG, "vocab_size": 0})), "dvae.vocab_size=0"),
    (lambda: CLIP(ClipConfig(image_size=32, patch_size=5)), "clip.image_size=32")])
def test_the_constructors_check_their_config(make, key):
    """DVAE(image_size=33) built and decoded 32 px; CLIP(patch_size=5) dropped pixels; vocab_size=0 divided by 0."""
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        make()
