"""A tiny CLIP config and a random batch of pairs it reads: 16 px images, captions of 5 tokens then pads.

A helper, not a test module: CLIP's own tests (tests/sample/test_clip*.py) and its validation's
(tests/eval/test_val_contrast.py) contrast the same pairs, and none of those test modules should be another's library.
"""
import torch

from megadalle.config.clip import ClipConfig

TINY = ClipConfig(text_len=8, text_vocab=50, text_width=32, text_layers=1, text_heads=2, image_size=16,
                  patch_size=4, vision_width=32, vision_layers=1, vision_heads=2, embed_dim=16)


def batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(4, 50, (n, 8), generator=g)
    text[:, 5:] = 0  # pads after the caption
    return torch.rand(n, 3, 16, 16, generator=g), text
