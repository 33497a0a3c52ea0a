"""The demo's check of its dVAE: do its reconstructions still show the scene, and are its codes in use?

The Transformer can only draw what the dVAE's codes can show: a dVAE that paints yellow as orange or
rounds triangles caps the demo's accuracy whatever the Transformer learns, and a collapsed codebook
leaves it few words to draw with. So the demo judges decode(encode(image)), the argmax codes the
Transformer trains on, with the same pixel judge as the samples, on fresh images of every scene
(held-out ones too: the Transformer must draw them from codes), and counts the codes those images use.
"""
from __future__ import annotations

import random

import torch

from megadalle.demo_data import all_scenes, render, to_tensor
from megadalle.demo_judge import ATTRIBUTES, agrees, judge
from megadalle.models.dvae_loss import codebook_perplexity


@torch.no_grad()
def check_dvae(dvae, image_size: int, per_scene: int, seed: int, batch_size: int = 64) -> dict[str, float]:
    """Share of reconstructions keeping colour, shape and position; share of codes in use; their perplexity."""
    rng = random.Random(seed)
    scenes = all_scenes() * per_scene
    images = torch.stack([to_tensor(render(scene, image_size, rng)) for scene in scenes])
    codes = torch.cat([dvae.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    recon = torch.cat([dvae.decode_codes(codes[i:i + batch_size]) for i in range(0, len(codes), batch_size)])
    kept = [agrees(judge(image), scene, ATTRIBUTES) for image, scene in zip(recon, scenes)]
    vocab = dvae.cfg.vocab_size
    return {"reconstructions_kept": sum(kept) / len(kept), "codes_in_use": codes.unique().numel() / vocab,
            "perplexity": codebook_perplexity(codes, vocab), "images": len(images)}
