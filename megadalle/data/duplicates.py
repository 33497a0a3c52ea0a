"""Exact duplicates among `prepare`'s kept samples: the same image bytes under the same caption text.

Scraped sets repost images (one file saved twice under two names), and a duplicate is trained on twice as often as
the rest; the paper removed them. `prepare` keeps them (no option removes them) but counts them in its summary and
report, so the user knows. They are never on both sides of the validation split: a side is decided by the image's
bytes (`split.py`). Each sample is remembered as 8 bytes of a digest (about 70 bytes of memory a kept sample, measured:
700 MB for 10 million): a run of n samples miscounts two distinct pairs as one with odds of about n**2 / 2**65.
"""
from __future__ import annotations

import hashlib


class Duplicates:
    """Counts kept samples whose (image digest, caption text) an earlier kept sample had."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.count = 0

    def add(self, image_digest: bytes, text: str) -> None:
        pair = hashlib.sha256(image_digest + text.encode("utf-8", "surrogatepass")).digest()
        key = int.from_bytes(pair[:8], "big")
        self.count += key in self.seen
        self.seen.add(key)
