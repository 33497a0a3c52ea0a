"""Data for the CLI tests: the distributed tests' tiny token set (with encode's meta) and tiny image shards."""
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent.parent / "distributed"))

from dist_fixtures import token_data, train_overrides  # noqa: E402,F401

from megadalle.data.index import ShardIndex  # noqa: E402
from megadalle.data.shards import ShardWriter  # noqa: E402


@pytest.fixture(scope="session")
def token_shards(token_data):
    """(token shards whose index.json carries encode's meta: 8x8 grid, 128 codes, 32 px; tokenizer of 40 pieces)."""
    shards, tok = token_data
    index = ShardIndex.load(shards)
    index.meta.update(grid_size=8, vocab_size=128, image_size=32)
    index.save()
    return shards, tok


@pytest.fixture(scope="session")
def image_shards(tmp_path_factory):
    """Eight 32 px JPEG samples with captions, as `prepare image_size=32` writes them."""
    root = tmp_path_factory.mktemp("images") / "shards"
    rng = np.random.default_rng(0)
    with ShardWriter(root, meta={"image_size": 32, "format": "jpg"}) as w:
        for i in range(8):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(), "txt": "a red circle"})
    return root
