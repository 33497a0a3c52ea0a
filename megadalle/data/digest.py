"""What a file holds, as run.json and bundle.json record it: the sha256 of the tokenizer model.

A path says where a file was, not what it held: a tokenizer retrained in place keeps its path and gives the
captions other ids, so a resume, an export or a sampling verb that went by the path alone would pair a model
with ids it never learnt. The records keep the digest beside the path, and the checks compare contents.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
