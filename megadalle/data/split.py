"""The held-out validation split: which samples `prepare` writes to `<output>/val/` instead of `<output>/`.

A sample's side is a pure function of its key (the first 8 bytes of SHA-256 of the key, read as a
fraction of 2**64, below `val_fraction` means validation): rerunning `prepare` on the same input
gives the same split whatever the number of workers, and `encode` carries it over to the token
shards (`<tokens>/val/`), so the dVAE, CLIP and the Transformer hold out the very same samples.
"""
from __future__ import annotations

import hashlib

from megadalle.config.data import VAL_DIR

__all__ = ["VAL_DIR", "is_validation"]


def is_validation(key: str, fraction: float) -> bool:
    """True when the sample `key` belongs to the held-out split of size `fraction` (0 <= fraction < 1)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64

