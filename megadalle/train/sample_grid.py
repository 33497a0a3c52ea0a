"""The Transformer's sample grid while it trains: a few fixed captions, sampled with the KV cache, decoded.

The captions are the first captions (non-blank lines) of the first `captions` samples that have one,
of the validation split, else of the training shards (`caption_sources`), in stored order, so every grid
of a run shows the same prompts; each is sampled `per_caption` times with the same seeds each time
(megadalle.sampling.loop), so two grids differ only because the weights did. Rows are captions, columns
samples. The dVAE (`dvae_weights=` on the train verb) is loaded once, on first use, on the model's device, read as
`encode` reads it (encode.dvae_weights_file): a train-dvae run directory stands for the file it exported, the EMA
its codes were encoded with, not its newest checkpoint's live weights, and an export the run trained past is refused.
"""
from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from megadalle.config.data import DataConfig
from megadalle.data.captions import first_caption
from megadalle.errors import UserError
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


CaptionSource = tuple[str, str]
"""(key, shard folder) the grids may take their captions from, the key naming it in messages."""


class NoGridCaptions(UserError):
    """No caption source has a captioned sample: the grid would be empty (torch.cat of no images)."""


def caption_sources(data: DataConfig) -> list[CaptionSource]:
    """Where the grids' captions come from, in order: the validation split, prompts the model does not train on, then
    data.shards, for a split without captions (a held-out set of uncaptioned samples crashed the run at its first
    grid, after `media_every` updates, on an empty list of images)."""
    held_out = data.validation_shards()
    return [*([("data.val_shards", held_out)] if held_out else []), ("data.shards", data.shards)]


def grid_captions(sources: Sequence[CaptionSource], count: int,
                  dvae_weights: str | Path) -> tuple[CaptionSource, list[str]]:
    """The first source with a captioned sample, and its first `count` captions (first_captions)."""
    for key, shards in sources:
        if captions := first_captions(shards, count):
            return (key, shards), captions
    folders = " nor of ".join(f"{key}={shards}" for key, shards in sources)
    raise NoGridCaptions(f"dvae_weights={dvae_weights}: the sample grids have no caption to draw: no sample of "
                         f"{folders} has one (a non-blank line in its txt); give captioned shards, or set "
                         "trainer.media_every=0")


def generate_settings() -> SamplingSettings:
    """The sampling settings `megadalle generate` uses by default, so the grids show what users will get."""
    from megadalle.config.sample import GenerateConfig

    return SamplingSettings(GenerateConfig.temperature, GenerateConfig.top_k, GenerateConfig.top_p)


class SampleGrid:
    """Builds nothing until the first call (export rebuilds tasks without the dVAE or the shards at hand)."""

    def __init__(self, dvae_weights: str | Path, tokenizer: str | Path, sources: Sequence[CaptionSource],
                 captions: int, per_caption: int, seed: int = 0):
        self.dvae_weights, self.tokenizer_path, self.sources = dvae_weights, tokenizer, list(sources)
        self.count, self.per_caption, self.seed = captions, per_caption, seed
        self.settings = generate_settings()
        self.captions: list[str] = []
        self._dvae = None
        self._tokenizer = None

    def _models(self, device: torch.device):
        if self._dvae is None:
            from megadalle.data.tokenizer import Tokenizer
            from megadalle.encode import dvae_weights_file
            from megadalle.sampling.load import load_model

            self.captions = grid_captions(self.sources, self.count, self.dvae_weights)[1]
            self._dvae = load_model(dvae_weights_file(self.dvae_weights), "dvae").to(device)
            self._tokenizer = Tokenizer(self.tokenizer_path)
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
