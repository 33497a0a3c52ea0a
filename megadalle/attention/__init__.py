"""Attention masks (pure definitions) and the dispatch that runs them."""
from megadalle.attention.dispatch import attend
from megadalle.attention.masks import MASK_KINDS, MaskSpec, allowed, dense_mask, layer_kinds

__all__ = ["attend", "MASK_KINDS", "MaskSpec", "allowed", "dense_mask", "layer_kinds"]
