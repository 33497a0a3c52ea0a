"""The image tower's learned tables start at their set scales: class token N(0, 0.02), positions N(0, 0.01).

These are the scales of CLIP's text tables (token table 0.02, positions 0.01, pinned in test_clip.py), which the
ViT here uses too (OpenAI's ViT draws both at width ** -0.5 instead). Every CLIP run starts from them (one seed
gives one model in every layout, models/fp32_init.py) and the recorded results were trained from them: a change,
such as positions drawn at the class token's 0.02, must be deliberate, and is caught here as the text tower's is.
"""
from __future__ import annotations

import pytest
import torch

from megadalle.config.clip import ClipConfig
from megadalle.models.clip import CLIP

CFG = ClipConfig(text_len=8, text_vocab=50, text_width=32, text_layers=1, text_heads=2, image_size=32, patch_size=4,
                 vision_width=1024, vision_layers=1, vision_heads=2, embed_dim=16)
"""A wide image tower, so the class token's 1024 values estimate its std within ~2% (1 / sqrt(2n))."""


@pytest.mark.parametrize("seed", [0, 1])
def test_the_class_token_and_the_image_positions_are_drawn_at_their_scales(seed):
    torch.manual_seed(seed)
    image = CLIP(CFG).image
    n_patches = (CFG.image_size // CFG.patch_size) ** 2
    assert image.cls.shape == (CFG.vision_width,)
    assert image.pos.shape == (n_patches + 1, CFG.vision_width)
    for table, std in ((image.cls, 0.02), (image.pos, 0.01)):
        assert table.dtype == torch.float32
        assert table.std().item() == pytest.approx(std, rel=0.1), tuple(table.shape)
        assert abs(table.mean().item()) < 0.15 * std, tuple(table.shape)
