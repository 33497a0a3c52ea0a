"""Verb-level keys of `megadalle train` and `megadalle train-clip` beside the run's (config.train.RunConfig).

Declared here so that they are typed and documented like every other key: `megadalle train media_captions=abc`
was a ValueError traceback and `media_samples=1.5` silently 1 (both read by `int()`), and `train-clip weights=2024`
an int that the export after the whole training could not take as a path. (train-dvae's own keys are
config.dvae.TrainDVAEConfig.)
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from megadalle.config import check, join


@dataclass
class TrainConfig:
    """Verb-level keys of `megadalle train` (conf/train.yaml) for its sample grids."""

    dvae_weights: str | None = None
    """The dVAE that decodes the sample grids drawn every trainer.media_every updates (into <run>/samples/; none
    with media_every=0, its default): a .safetensors file or a train-dvae run directory (the file it exported, as
    encode reads it); null = no grids."""
    media_captions: int = 4
    """Fixed captions in each sample grid, one row each: the first ones of the validation split (else, or when it
    has none, of the training shards)."""
    media_samples: int = 4
    """Samples drawn per caption in each sample grid: its columns."""

    def validate(self, where: str = "") -> None:
        for name in ("media_captions", "media_samples"):
            check(getattr(self, name) > 0, join(where, name), getattr(self, name), "must be positive")


@dataclass
class TrainClipConfig:
    """Verb-level keys of `megadalle train-clip` (conf/train-clip.yaml)."""

    tokenizer: str = MISSING
    """The sentencepiece model from `megadalle tokenizer` (the Transformer's, so that ids agree)."""
    weights: str | None = None
    """Where the trained CLIP is exported for users: a .safetensors file (its .json beside it), else a folder of
    shards; null = <run_dir>/clip.safetensors."""
