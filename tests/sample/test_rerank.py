"""Rerank orders samples by CLIP score, best first; the grid holds every kept image."""
import torch

from megadalle.config.clip import ClipConfig
from megadalle.models.clip import CLIP
from megadalle.sampling.grid import make_grid
from megadalle.sampling.rerank import clip_scores, rank


def test_rank_orders_by_score_and_keeps_k():
    scores = torch.tensor([0.1, 0.9, -0.3, 0.5, 0.9])
    assert rank(scores, 3).tolist() == [1, 4, 3]
    assert rank(scores, 10).tolist() == [1, 4, 3, 0, 2]


def test_a_nan_score_ranks_last():
    """torch sorts NaN above every number: a CLIP gone to NaN made its sample "the best"."""
    assert rank(torch.tensor([0.5, float("nan"), 0.7]), 3).tolist() == [2, 0, 1]


def test_clip_scores_match_per_image_cosines_and_ranking_follows():
    cfg = ClipConfig(text_len=8, text_vocab=50, text_width=32, text_layers=1, text_heads=2, image_size=16,
                     patch_size=4, vision_width=32, vision_layers=1, vision_heads=2, embed_dim=16)
    clip = CLIP(cfg).eval()
    images, text = torch.rand(5, 3, 16, 16), torch.randint(4, 50, (8,))
    scores = clip_scores(clip, images, text, batch_size=2)
    expected = torch.stack([clip.score(images[i:i + 1], text[None])[0] for i in range(5)])
    torch.testing.assert_close(scores, expected)
    best = rank(scores, 2)
    assert scores[best[0]] == scores.max() and scores[best[0]] >= scores[best[1]]


def test_grid_tiles_images():
    images = torch.zeros(5, 3, 8, 8)
    images[2] = 1.0
    grid = make_grid(images, columns=3, pad=2)
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)
    assert grid.getpixel((2 + 2 * 10 + 4, 2 + 4)) == (255, 255, 255)
    assert grid.getpixel((2 + 4, 2 + 4)) == (0, 0, 0)
