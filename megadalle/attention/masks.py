"""The attention masks of DALL-E, each defined once, as a pure function of positions.

The sequence is `text_len` text positions followed by an H x W image grid in raster order.
Text attends causally to text; every image position sees every text position (pads included,
since they carry learned per-position embeddings); image-to-image visibility depends on the
layer's mask kind. Every consumer (the dense reference path, the Triton block tables, the
KV-cached sampler, the tests) derives its view of a mask from `allowed`, so a mask cannot mean
two different things in two places.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

MASK_KINDS = ("dense", "row", "row_strict", "column", "conv")
"""`dense` is plain causal attention over the image (handy as a baseline); the others are the paper's."""


@dataclass(frozen=True)
class MaskSpec:
    """Everything that determines one layer's mask; hashable so it can key caches."""

    kind: str
    text_len: int
    grid_h: int
    grid_w: int
    kernel: int = 11
    wrap: bool = True

    def __post_init__(self):
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; expected one of {MASK_KINDS}")
        for name in ("text_len", "grid_h", "grid_w", "kernel"):
            if getattr(self, name) <= 0:
                raise ValueError(f"mask {name} must be positive, got {getattr(self, name)}")
        if self.kernel % 2 == 0:
            raise ValueError(f"conv mask kernel must be odd, got {self.kernel}")

    @property
    def seq_len(self) -> int:
        return self.text_len + self.grid_h * self.grid_w


def _image_allowed(spec: MaskSpec, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Visibility of image position r from image position p (both raster indices), causal."""
    w = spec.grid_w
    causal = r <= p
    if spec.kind == "dense":
        return causal
    if spec.kind == "row":
        # Sparse Transformer's strided "row": itself and the previous W positions.
        return causal & (r >= p - w)
    if spec.kind == "row_strict":
        return causal & (torch.div(r, w, rounding_mode="floor") == torch.div(p, w, rounding_mode="floor"))
    if spec.kind == "column":
        return causal & (r % w == p % w)
    half = spec.kernel // 2
    if not spec.wrap:
        row_near = (torch.div(r, w, rounding_mode="floor") - torch.div(p, w, rounding_mode="floor")).abs() <= half
        return causal & row_near & ((r % w - p % w).abs() <= half)
    # Wraparound window: r - p = a*W + b with |a|, |b| <= half. The largest a with b >= -half
    # gives the smallest admissible b, so that a (clamped to |a| <= half) decides.
    d = r - p
    a = torch.div(d + half, w, rounding_mode="floor").clamp(-half, half)
    return causal & ((d - a * w).abs() <= half)


def allowed(spec: MaskSpec, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Whether query position q may attend to key position k (broadcasting index tensors)."""
    t = spec.text_len
    q_text, k_text = q < t, k < t
    image = _image_allowed(spec, q - t, k - t)
    return torch.where(q_text, k_text & (k <= q), torch.where(k_text, torch.ones_like(image), image))


@lru_cache(maxsize=64)
def shared_dense_mask(spec: MaskSpec) -> torch.Tensor:
    """`dense_mask` on the CPU, built once per spec and shared by readers that never write to it (the
    reference path, the FLOPs count): an in-place edit would change every later call. Anyone else
    takes `dense_mask`'s copy."""
    idx = torch.arange(spec.seq_len)
    return allowed(spec, idx[:, None], idx[None, :])


def dense_mask(spec: MaskSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """The full [seq, seq] boolean mask (True = may attend), a fresh copy the caller may modify."""
    return shared_dense_mask(spec).to(device, copy=True)


PAPER_PATTERN = ("row", "column", "row", "row")
"""Column attention where (i - 2) mod 4 == 0 for 1-based layer i, row elsewhere."""


def layer_kinds(n_layers: int, pattern: tuple[str, ...] | list[str], last: str | None) -> list[str]:
    """The mask kind of each layer: `pattern` repeated over the layers, `last` overriding the final one."""
    if not pattern:
        raise ValueError("attention pattern must name at least one mask kind")
    if len(pattern) > n_layers:
        raise ValueError(f"attention pattern {list(pattern)} is longer than n_layers={n_layers}: its kinds past layer "
                         f"{n_layers} would never be used; give at most {n_layers} kinds, or more layers")
    for kind in [*pattern, *([last] if last else [])]:
        if kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    kinds = [pattern[i % len(pattern)] for i in range(n_layers)]
    if last:
        kinds[-1] = last
    return kinds
