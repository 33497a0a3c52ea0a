"""Small shard directories built once per session: image shards and token shards with uneven shard sizes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from megadalle.data.shards import ShardWriter

WORDS = "a red blue green small big cat dog bird house tree car boat sits on under near the mat hill sky".split()


def jpeg_bytes(size=(48, 40), seed=0, fmt="JPEG", mode="RGB") -> bytes:
    """A noisy colour image (noise keeps JPEG sizes realistic)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def write_counts(root, counts, make_sample):
    """Shards holding exactly `counts[i]` samples each."""
    with ShardWriter(root) as w:
        i = 0
        for count in counts:
            for _ in range(count):
                w.write(make_sample(i))
                i += 1
            w.finish_shard()
    return root


@pytest.fixture(scope="session")
def image_shards(tmp_path_factory):
    """23 samples in shards of 7, 3, 9, 4 (so no shard split divides evenly), 16x16 JPEGs."""
    rng = np.random.default_rng(0)
    caps = [caption(rng) + "\n" + caption(rng) for _ in range(23)]
    return write_counts(tmp_path_factory.mktemp("images"), [7, 3, 9, 4], lambda i: {
        "__key__": f"{i:06d}", "jpg": jpeg_bytes((16, 16), i), "txt": caps[i], "json": {"i": i}})


@pytest.fixture(scope="session")
def token_shards(tmp_path_factory):
    """30 samples of 4x4 uint16 codes (code value = sample number) in shards of 11, 2, 17."""
    rng = np.random.default_rng(1)
    caps = [caption(rng) for _ in range(30)]
    return write_counts(tmp_path_factory.mktemp("tokens"), [11, 2, 17], lambda i: {
        "__key__": f"{i:06d}", "codes.npy": np.full((4, 4), i, np.uint16), "txt": caps[i]})


@pytest.fixture(scope="session")
def caption_shards(tmp_path_factory):
    """2,000 caption-only samples for tokenizer training."""
    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("captions")
    with ShardWriter(root, max_count=700) as w:
        for i in range(2000):
            w.write({"__key__": f"{i:06d}", "txt": caption(rng)})
    return root


@pytest.fixture(scope="session")
def tokenizer(caption_shards, tmp_path_factory):
    from megadalle.data.tokenizer import train_tokenizer

    return train_tokenizer(caption_shards, tmp_path_factory.mktemp("tok") / "tok.model", vocab_size=64)
