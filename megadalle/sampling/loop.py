"""The KV-cached sampling loop: the caption once (prefill), then one image token per step.

Without a cache every new token costs a forward pass over the whole sequence; with it, a step
runs the model on one position against stored keys and values, and only the keys its layer's
mask allows (megadalle.sampling.decoder). Each batch of samples draws from
its own generator seeded by (seed, batch index), and batch b does not depend on how the batches
before it went. The split into batches matters: sample i is drawn by batch i // batch_size at row
i % batch_size, so the same seed with another batch_size (or another n, which changes the last batch)
draws other samples; a rerun reproduces them with the same seed, n and batch_size (and dtype and device).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from megadalle.sampling.decoder import SparseDecoder
from megadalle.sampling.filters import sample_next
from megadalle.seeds import derived_seed


@dataclass(frozen=True)
class SamplingSettings:
    """Defaults: the model's own distribution, unfiltered. The verbs (generate, evaluate, the training grids)
    use GenerateConfig's instead (top_p 0.9); `train.sample_grid.generate_settings` builds those."""

    temperature: float = 1.0
    top_k: int = 0
    """0 keeps every token."""
    top_p: float = 1.0
    """1.0 keeps every token."""


class ModelCacheDecoder:
    """The model's own cached path (dense mask slices, every cached key): the reference the sparse
    decoder is tested and benchmarked against."""

    def __init__(self, model, batch: int, device: torch.device | str, dtype: torch.dtype):
        self.model, self.cache = model, model.init_cache(batch, device, dtype)

    def prefill(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.prefill(text, self.cache)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        return self.model.decode_step(token, self.cache)


@torch.no_grad()
def sample_codes(model, text: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None = None,
                 on_token: Callable[[int], None] | None = None, sparse: bool = True) -> torch.Tensor:
    """Text ids [B, text_len] -> sampled image codes [B, grid_len] (model: a Transformer in eval mode).

    `sparse=False` decodes through the model's own cache instead (slower): the same samples in fp32. In bf16 the
    two paths sum in other orders and round differently, so a token whose top candidates are that close can come
    out otherwise (1 of 512 tokens differed on CPU): the same distribution, not always the same samples.
    """
    grid_len = model.cfg.grid_len
    dtype = next(model.parameters()).dtype
    decoder = (SparseDecoder if sparse else ModelCacheDecoder)(model, text.shape[0], text.device, dtype)
    logits = decoder.prefill(text)
    codes = torch.empty(text.shape[0], grid_len, dtype=torch.long, device=text.device)
    for i in range(grid_len):
        codes[:, i] = sample_next(logits, settings.temperature, settings.top_k, settings.top_p, generator)
        if i + 1 < grid_len:
            logits = decoder.step(codes[:, i])
        if on_token is not None:
            on_token(text.shape[0])
    return codes


def batch_generator(seed: int, batch_index: int, device: torch.device | str) -> torch.Generator:
    """The generator of one batch of samples: independent of the batches before it. Any integer seed (generate's
    is not a root seed: a negative one draws too)."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, batch_index))


def sample_batches(model, text: torch.Tensor, n: int, batch_size: int, settings: SamplingSettings, seed: int,
                   on_token: Callable[[int], None] | None = None, first_batch: int = 0) -> Iterator[torch.Tensor]:
    """n samples of one caption (text ids [text_len]) as seeded batches of codes [<=batch_size, grid_len], from
    batch `first_batch` on (a resumed run's: the batches before it were saved, and the ones after are drawn as
    an uninterrupted run draws them)."""
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"n={n} and batch_size={batch_size} must be positive")
    for b, start in enumerate(range(first_batch * batch_size, n, batch_size), start=first_batch):
        size = min(batch_size, n - start)
        yield sample_codes(model, text.expand(size, -1), settings, batch_generator(seed, b, text.device), on_token)


def sample_many(model, text: torch.Tensor, n: int, batch_size: int, settings: SamplingSettings, seed: int,
                on_token: Callable[[int], None] | None = None) -> torch.Tensor:
    """All of `sample_batches` as one tensor [n, grid_len]."""
    return torch.cat(list(sample_batches(model, text, n, batch_size, settings, seed, on_token)))
