"""The demo's CLIP trains on the dVAE's reconstructions, the originals or both: every image of a folder replaced
by decode(encode(image)), its caption kept, in the same file names (megadalle.demo_recon.reconstruct_folder), and
the shards CLIP reads made of what `demo.clip_images` names (megadalle.demo.clip_training_shards)."""
import dataclasses
import random

import pytest
import torch
from PIL import Image

from megadalle.config.demo import DemoConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.data.reader import iter_samples
from megadalle.demo import clip_training_shards, prepare_folder
from megadalle.demo_data import all_scenes, to_tensor, write_dataset
from megadalle.demo_recon import reconstruct_folder
from megadalle.models.dvae import DVAE


def tiny_dvae() -> DVAE:
    torch.manual_seed(0)
    return DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=32, n_init=8)).eval()


def demo_images(tmp_path):
    return write_dataset(tmp_path / "raw", random.Random(0).sample(all_scenes(), 3), per_scene=2, size=16, seed=0)


def test_each_image_becomes_its_reconstruction_with_its_caption(tmp_path):
    dvae = tiny_dvae()
    source = demo_images(tmp_path)
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


@pytest.mark.parametrize("kind, originals, reconstructions", [("original", 6, 0), ("reconstructed", 0, 6),
                                                               ("both", 6, 6)])
def test_clip_trains_on_what_clip_images_names(tmp_path, kind, originals, reconstructions):
    dvae = tiny_dvae()
    source = demo_images(tmp_path)
    shards = prepare_folder(source, tmp_path / "shards", 16)
    d = dataclasses.replace(DemoConfig(image_size=16), clip_images=kind)
    clip_shards = clip_training_shards(d, dvae, tmp_path, shards, seed=0)
    original: dict[str, list[torch.Tensor]] = {}  # caption -> its original images
    for png in sorted(source.glob("*.png")):
        caption = png.with_suffix(".txt").read_text().strip()
        original.setdefault(caption, []).append(to_tensor(Image.open(png).convert("RGB")))
    counts = {"original": 0, "reconstructed": 0}
    for sample in iter_samples(clip_shards):
        image = to_tensor(sample["png"].convert("RGB"))
        exact = any(torch.equal(image, x) for x in original[sample["txt"].strip()])
        counts["original" if exact else "reconstructed"] += 1
    assert counts == {"original": originals, "reconstructed": reconstructions}
