"""The Transformer's sample grid while it trains: a few fixed captions, sampled with the KV cache, decoded.

The captions are the first captions (non-blank lines) of the first `captions` samples that have one,
of the validation split (of the training shards when there is none), in stored order, so every grid
of a run shows the same prompts; each is sampled `per_caption` times with the same seeds each time
(megadalle.sampling.loop), so two grids differ only because the weights did. Rows are captions, columns
samples. The dVAE (`dvae_weights=` on the train verb) is loaded once, on first use, on the model's device.
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import torch

from megadalle.data.captions import first_caption
from megadalle.sampling.grid import make_grid
from megadalle.sampling.loop import SamplingSettings, sample_many
from megadalle.train.media import Picture


def first_captions(shards: str | Path, count: int) -> list[str]:
    """The first caption of each of the first `count` samples of a shard directory that have one, as `evaluate`
    reads them (megadalle.data.captions): a blank line is no caption the model learned from, and sampling ""
    would draw an unconditional image under an empty label."""
    from megadalle.data.shards import iter_samples

    captions = (first_caption(s.get("txt", "")) for s in iter_samples(shards, ["txt"]))
    return list(islice(filter(None, captions), count))


def generate_settings() -> SamplingSettings:
    """The sampling settings `megadalle generate` uses by default, so the grids show what users will get."""
    from megadalle.config.sample import GenerateConfig

    return SamplingSettings(GenerateConfig.temperature, GenerateConfig.top_k, GenerateConfig.top_p)


class SampleGrid:
    """Builds nothing until the first call (export rebuilds tasks without the dVAE or the shards at hand)."""

    def __init__(self, dvae_weights: str | Path, tokenizer: str | Path, shards: str | Path, captions: int,
                 per_caption: int, seed: int = 0):
        self.dvae_weights, self.tokenizer_path, self.shards = dvae_weights, tokenizer, shards
        self.count, self.per_caption, self.seed = captions, per_caption, seed
        self.settings = generate_settings()
        self.captions: list[str] = []
        self._dvae = None
        self._tokenizer = None

    def _models(self, device: torch.device):
        if self._dvae is None:
            from megadalle.data.tokenizer import Tokenizer
            from megadalle.sampling.load import load_model

            self._dvae = load_model(self.dvae_weights, "dvae").to(device)
            self._tokenizer = Tokenizer(self.tokenizer_path)
            self.captions = first_captions(self.shards, self.count)
        return self._dvae, self._tokenizer

    @torch.no_grad()
    def __call__(self, model) -> Picture:
        """The grid of `model`'s samples (a Transformer in eval mode)."""
        device = next(model.parameters()).device
        dvae, tokenizer = self._models(device)
        images = []
        for caption in self.captions:
            text = torch.tensor(tokenizer.encode(caption, model.cfg.text_len), device=device)
            codes = sample_many(model, text, self.per_caption, self.per_caption, self.settings, self.seed)
            images.append(dvae.decode_codes(codes.view(-1, model.cfg.grid_size, model.cfg.grid_size)).float())
        grid = make_grid(torch.cat(images), columns=self.per_caption)
        return Picture(np.asarray(grid), caption=" | ".join(self.captions))
