"""The held-out validation split: which samples `prepare` writes to `<output>/val/` instead of `<output>/`.

A sample's side is a pure function of its identity, its name in the input (`sources.Item.identity`: the
relative path in a folder, the resolved image path in a manifest, shard name and key for a shard sample):
the first 8 bytes of SHA-256 of it, read as a fraction of 2**64, below `val_fraction` means validation.
Never of its position in the listing: adding or removing other inputs then moves no sample across (a
position-based split sent samples that had been held out into training when a file sorting first was
added, so the model trained on what it had been measured on). Rerunning `prepare` gives the same split
whatever the number of workers, and `encode` carries it over to the token shards (`<tokens>/val/`), so
the dVAE, CLIP and the Transformer hold out the very same samples.
"""
from __future__ import annotations

import hashlib

from megadalle.config.data import VAL_DIR

__all__ = ["VAL_DIR", "is_validation"]


def is_validation(identity: str, fraction: float) -> bool:
    """True when the sample named `identity` belongs to the held-out split of size `fraction` (0 <= fraction < 1)."""
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64
