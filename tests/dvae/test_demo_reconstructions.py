"""The demo's CLIP trains on the dVAE's reconstructions: every image of a folder replaced by decode(encode(image)),
its caption kept, in the same file names (megadalle.demo_recon.reconstruct_folder)."""
import random

import torch
from PIL import Image

from megadalle.config.dvae import DVAEConfig
from megadalle.demo_data import all_scenes, to_tensor, write_dataset
from megadalle.demo_recon import reconstruct_folder
from megadalle.models.dvae import DVAE


def test_each_image_becomes_its_reconstruction_with_its_caption(tmp_path):
    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=32, n_init=8)).eval()
    scenes = random.Random(0).sample(all_scenes(), 3)
    source = write_dataset(tmp_path / "raw", scenes, per_scene=2, size=16, seed=0)
    target = reconstruct_folder(dvae, source, tmp_path / "recon", batch_size=4)  # two batches, the last one short
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in target.iterdir()) == names and len(names) == 12
    for png in sorted(source.glob("*.png")):
        assert (target / png.with_suffix(".txt").name).read_text() == png.with_suffix(".txt").read_text()
        image = to_tensor(Image.open(png).convert("RGB"))[None]
        expected = dvae.decode_codes(dvae.encode(image))[0]
        written = to_tensor(Image.open(target / png.name).convert("RGB"))
        assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6, png.name  # PNG keeps 8 bits
        assert not torch.equal(written, to_tensor(Image.open(png).convert("RGB")))
