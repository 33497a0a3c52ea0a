"""CLIP reranking: score every sample against its caption, keep the best.

The paper draws 512 samples per caption and shows the ones CLIP ranks highest; the Transformer's
likelihood alone would favour bland images, CLIP's judgement of image-caption agreement does not.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def clip_scores(clip, images: torch.Tensor, text: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Cosine similarity of each image [N, 3, S, S] with one caption's CLIP ids [text_len] -> [N]."""
    txt = clip.encode_text(text[None])
    scores = [(clip.encode_image(images[i:i + batch_size]) * txt).sum(-1) for i in range(0, len(images), batch_size)]
    return torch.cat(scores)


def rank(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores, best first (ties keep sample order)."""
    if keep <= 0:
        raise ValueError(f"keep={keep} must be positive")
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:keep]
