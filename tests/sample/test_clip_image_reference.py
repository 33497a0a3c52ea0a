"""CLIP's image tower against a plain-PyTorch ViT built from its own parameters (hunt C10, C11).

The reranker's scores are only as good as the image feature: with causal attention in the ViT the class token read
only itself, and every image got the same feature (all CLIP tests passed, reranking was random); pooled from the
first patch instead of the class token, the feature was another one than CLIP's. The reference here is written out
by hand, as CLIP's ViT computes it (patches as a matrix product, the class token first, pre-norm blocks with
unmasked softmax attention, the class token's state normalised and projected), so it shares no code with the model.
"""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from megadalle.models.clip import CLIP
from tests.sample.tiny_clip import TINY

WIDER = dataclasses.replace(TINY, image_size=24, patch_size=8, vision_width=48, vision_layers=2, vision_heads=3)
"""Another patch size, width, head count and depth: 9 patches, heads of 16, two blocks in a row."""

EPS = 1e-5
"""torch.nn.LayerNorm's default eps, as CLIP's LayerNorm uses it."""


def layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * norm.weight + norm.bias


def attention(x: torch.Tensor, block) -> torch.Tensor:
    """Unmasked multi-head attention: every position, the class token included, reads every position."""
    n, length, width = x.shape
    heads = block.heads
    q, k, v = (x @ block.qkv.weight.t() + block.qkv.bias).split(width, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, length, width)
    return out @ block.proj.weight.t() + block.proj.bias


def mlp(x: torch.Tensor, block) -> torch.Tensor:
    up, _, down = block.mlp
    return F.gelu(x @ up.weight.t() + up.bias) @ down.weight.t() + down.bias


def reference_features(tower, image: torch.Tensor) -> torch.Tensor:
    """The ViT's image feature [N, embed_dim] of square images [N, 3, S, S] in [0, 1] at the tower's size."""
    width, _, p, _ = tower.patch.weight.shape
    n, _, size, _ = image.shape
    grid = size // p
    pixels = image * 2 - 1  # CLIP reads pixels in [-1, 1]
    patches = pixels.reshape(n, 3, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, 3 * p * p)
    x = patches @ tower.patch.weight.reshape(width, -1).t()  # raster order of patches, no bias
    x = torch.cat([tower.cls.expand(n, 1, width), x], dim=1) + tower.pos
    x = layer_norm(x, tower.ln_pre)
    for block in tower.blocks:
        x = x + attention(layer_norm(x, block.ln1), block)
        x = x + mlp(layer_norm(x, block.ln2), block)
    return layer_norm(x[:, 0], tower.ln_post) @ tower.proj.weight.t()  # the class token's state


def random_clip(cfg, seed: int = 0) -> CLIP:
    """A CLIP in float64 whose every parameter is random: norms that are not the identity, biases that are not 0."""
    torch.manual_seed(seed)
    model = CLIP(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return model


def images(cfg, n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("cfg", [TINY, WIDER], ids=["tiny", "wider"])
@torch.no_grad()
def test_the_image_feature_is_the_plain_vits(cfg):
    model = random_clip(cfg)
    batch = images(cfg)
    torch.testing.assert_close(model.image(batch), reference_features(model.image, batch))


@torch.no_grad()
def test_different_images_get_different_features():
    """The class token must read the patches: with a causal mask it read only itself, one feature for all images."""
    model = CLIP(TINY).eval()
    first, second = model.encode_image(images(TINY, 2).float())
    assert torch.dot(first, second) < 0.999, "two different images got the same CLIP feature"


@torch.no_grad()
def test_the_last_patch_reaches_the_feature():
    """The last patch is the one a causal mask hides from the class token longest."""
    model = CLIP(TINY).eval()
    image = images(TINY, 1).float()
    changed = image.clone()
    changed[..., -TINY.patch_size:, -TINY.patch_size:] = 1 - changed[..., -TINY.patch_size:, -TINY.patch_size:]
    assert not torch.allclose(model.image(image), model.image(changed))
