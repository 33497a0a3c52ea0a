"""Small generated image shards for the dVAE tests: coloured rectangles on coloured backgrounds."""
import io

import pytest
import torch
from PIL import Image

from megadalle.data.shards import ShardWriter

PALETTE = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1.0]])


def rectangles(n: int, size: int, seed: int = 0, white: bool = False) -> torch.Tensor:
    """[n, 3, size, size] in [0, 1]: a palette (or white) background with one palette rectangle a quarter to
    half the side."""
    g = torch.Generator().manual_seed(seed)
    backgrounds = torch.ones(n, dtype=torch.long) if white else torch.randint(0, 8, (n,), generator=g)
    images = PALETTE[backgrounds].view(n, 3, 1, 1).repeat(1, 1, size, size)
    lo = torch.randint(0, size // 2, (n, 2), generator=g)
    hi = lo + torch.randint(size // 4, size // 2 + 1, (n, 2), generator=g)
    colour = PALETTE[torch.randint(0, 8, (n,), generator=g)]
    for i in range(n):
        images[i, :, lo[i, 0]:hi[i, 0], lo[i, 1]:hi[i, 1]] = colour[i].view(3, 1, 1)
    return images


def png(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, format="PNG")
    return buf.getvalue()


def write_image_shards(root, n: int, size: int, per_shard: int, seed: int = 0) -> None:
    images = rectangles(n, size, seed)
    with ShardWriter(root, max_count=per_shard, meta={"image_size": size}) as writer:
        for i, image in enumerate(images):
            writer.write({"__key__": f"img{i:04d}", "png": png(image), "txt": f"picture number {i}\nsecond line",
                          "json": {"i": i}})


@pytest.fixture(scope="session")
def image_shards(tmp_path_factory):
    """40 rectangle images of 32 px in 3 shards (16, 16, 8)."""
    root = tmp_path_factory.mktemp("images")
    write_image_shards(root, 40, 32, 16)
    return root


@pytest.fixture(scope="session")
def small_dvae_config():
    from megadalle.config.dvae import DVAEConfig

    return DVAEConfig(image_size=32, n_hid=16, n_blk_per_group=1, n_groups=3, vocab_size=64, n_init=16)




@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one intra-op thread (tests/conftest.py says why)."""
