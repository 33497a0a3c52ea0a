"""The demo's dVAE as the other stages meet it: its check (do its reconstructions still show the scene, are
its codes in use?) and the reconstructions CLIP trains on.

The Transformer can only draw what the dVAE's codes can show: a dVAE that paints yellow as orange or
rounds triangles caps the demo's accuracy whatever the Transformer learns, and a collapsed codebook
leaves it few words to draw with. So the demo judges decode(encode(image)), the argmax codes the
Transformer trains on, with the same pixel judge as the samples, on fresh images of every scene
(held-out ones too: the Transformer must draw them from codes), and counts the codes those images use.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch
from PIL import Image

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


@torch.no_grad()
def reconstruct_folder(dvae, source: Path, target: Path, batch_size: int = 128) -> Path:
    """decode(encode(image)) of every `NNNNNN.png` in `source`, with its caption, as the same files in `target`.

    CLIP reranks the Transformer's samples, which are dVAE decodings: trained on the real images, it judged
    this small dVAE's renderings (orange for red, stepped triangles) against crisp ones and its best 8 of 32
    held fewer correct samples than all 32 on two of three seeds. Trained on the reconstructions of the same
    images, its best 8 of the same samples held 75% of the held-out captions against 67% (three seeds; 71%
    against 67% in whole demos rerun: benchmarks/RESULTS.md, Demo: "CLIP trained on what it reranks")."""
    target.mkdir(parents=True, exist_ok=True)
    pngs = sorted(Path(source).glob("*.png"))
    for i in range(0, len(pngs), batch_size):
        batch = pngs[i:i + batch_size]
        images = torch.stack([to_tensor(Image.open(png).convert("RGB")) for png in batch])
        for png, image in zip(batch, dvae.decode_codes(dvae.encode(images))):
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(target / png.name)
            shutil.copyfile(png.with_suffix(".txt"), target / png.with_suffix(".txt").name)
    return target
