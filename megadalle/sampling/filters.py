"""Temperature, top-k and top-p (nucleus) filtering of next-token logits, then a seeded draw.

Filters set the logits of excluded tokens to -inf instead of renormalising, so they compose in
any order and the draw (softmax + multinomial) stays one operation.
"""
from __future__ import annotations

import math

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (all of them when k <= 0 or k >= vocab)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability sums to at least p (p >= 1 keeps all).

    A token is kept when the probability mass strictly before it (in descending order) is below
    p, so the most likely token always survives.
    """
    if p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p={p} must be in (0, 1]")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature first (it changes which tokens make up the top-p mass), then top-k, then top-p."""
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature={temperature} must be positive and finite")
    logits = logits.float()
    # Each row shifted to a maximum of 0 first (softmax does not see a shift): divided by a tiny temperature,
    # raw logits overflowed to inf, softmax gave NaN and every draw was token 0; shifted, they go to -inf and
    # the draw is the most likely token, as a temperature near 0 should give.
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from softmax(logits) [B, V] -> [B].

    argmax(p / E) with E ~ Exp(1) i.i.d. is an exact draw from p (the exponential race), and costs
    a fraction of torch.multinomial at batch 1, where sampling overhead is a visible share of a step.
    """
    probs = logits.softmax(-1)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(-1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """`draw(filter_logits(...))`, computed on the top-k candidates alone when top_k is set (k << vocab) and no
    logit beyond them ties with the k-th. top_k_filter keeps every token tied with the k-th, as GPT-2's and DALL-E's
    samplers do; the candidates alone left out the tied ones beyond them, never drawn, and bf16 logits tie often (over
    8192 tokens the k-th ties with the next in about 70% of rows at k=100). A batch with such a row is drawn over
    the whole vocabulary. (Two logits apart that the temperature's scaling rounds to one value tie in the filter but
    not here: a difference of a rounding error in one token's probability.)"""
    if 0 < top_k < logits.shape[-1]:
        values, index = torch.topk(logits, top_k + 1, dim=-1)
        if not torch.eq(values[..., top_k - 1], values[..., top_k]).any():
            choice = draw(filter_logits(values[..., :top_k], temperature, 0, top_p), generator)
            return index.gather(-1, choice[:, None]).squeeze(-1)
    return draw(filter_logits(logits, temperature, top_k, top_p), generator)
