"""`prepare val_fraction=`: a deterministic held-out split in <output>/val/, found by the data config, kept by `encode`."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from megadalle.cli import main
from megadalle.config.data import DataConfig, PrepareConfig
from megadalle.data.prepare import prepare
from megadalle.data.shards import ShardIndex, iter_samples
from megadalle.data.split import image_digest, is_validation
from megadalle.errors import UserError


def image_folder(root, n: int = 40):
    """n solid-colour 64 px PNGs with a caption each."""
    root.mkdir(parents=True)
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (i * 6, 255 - i * 6, 90)).save(buf, "PNG")
        (root / f"im{i:03d}.png").write_bytes(buf.getvalue())
        (root / f"im{i:03d}.txt").write_text(f"picture {i}")
    return root


def keys(root) -> list[str]:
    return [s["__key__"] for s in iter_samples(root, ["txt"])]


def test_is_validation_is_a_stable_fraction():
    digests = [image_digest(f"{i:09d}".encode()) for i in range(5000)]
    held = [is_validation(digest, 0.2) for digest in digests]
    assert abs(sum(held) / 5000 - 0.2) < 0.02
    assert held == [is_validation(image_digest(f"{i:09d}".encode()), 0.2) for i in range(5000)]
    assert not any(is_validation(digest, 0.0) for digest in digests[:100])


@pytest.mark.parametrize("data, fraction", [(b"", 0.8894159948913374), (b"abc", 0.7283949105904022)])
def test_an_images_side_is_the_first_8_bytes_of_the_sha256_of_its_bytes(data, fraction):
    """sha256(b"") = e3b0c442 98fc1c14...: 0xe3b0c44298fc1c14 / 2**64 = 0.8894."""
    assert is_validation(image_digest(data), fraction + 1e-9) and not is_validation(image_digest(data), fraction - 1e-9)


def test_prepare_holds_out_a_disjoint_deterministic_split(tmp_path):
    folder = image_folder(tmp_path / "in")
    out = tmp_path / "shards"
    summary = prepare(PrepareConfig(input=str(folder), output=str(out), image_size=32, num_workers=0,
                                    val_fraction=0.25), progress=False)
    train, val = keys(out), keys(out / "val")
    assert summary.kept == 40 and summary.val_kept == len(val) > 0
    assert sorted(train + val) == [f"{i:09d}" for i in range(40)] and not set(train) & set(val)
    names = {s["__key__"]: s["json"]["source"] for root in (out, out / "val") for s in iter_samples(root, ["json"])}
    assert val == [k for k in sorted(names)  # by the source image's bytes, not by key
                   if is_validation(image_digest((folder / names[k]).read_bytes()), 0.25)]
    assert ShardIndex.load(out / "val").meta["split"] == "val"

    prepare(PrepareConfig(input=str(folder), output=str(out), image_size=32, num_workers=2, val_fraction=0.25),
            progress=False)
    assert (keys(out), keys(out / "val")) == (train, val)

    data = DataConfig(shards=str(out))
    assert data.validation_shards() == str(out / "val")
    prepare(PrepareConfig(input=str(folder), output=str(out), image_size=32, num_workers=0), progress=False)
    assert not (out / "val").exists() and len(keys(out)) == 40
    assert data.validation_shards() is None


def test_explicit_val_shards_win(tmp_path):
    """What they must hold is checked where the run validates (tests/cli/test_preflight.py): tars from elsewhere
    are indexed there, as data.shards are."""
    assert DataConfig(shards="x", val_shards=str(tmp_path)).validation_shards() == str(tmp_path)


def test_prepare_refuses_a_bad_fraction(tmp_path):
    with pytest.raises(UserError, match="val_fraction"):
        PrepareConfig(input="a", output="b", val_fraction=1.0).validate()


def test_encode_carries_the_split_over(tmp_path):
    from megadalle.config.dvae import DVAEConfig
    from megadalle.models.dvae import DVAE
    from megadalle.weights import save_weights

    out = tmp_path / "shards"
    prepare(PrepareConfig(input=str(image_folder(tmp_path / "in", 12)), output=str(out), image_size=32,
                          num_workers=0, val_fraction=0.3), progress=False)
    cfg = DVAEConfig(image_size=32, n_hid=8, n_blk_per_group=1, n_groups=3, vocab_size=16, n_init=8)
    weights = tmp_path / "dvae.safetensors"
    save_weights(weights, DVAE(cfg).state_dict(), kind="dvae", config=cfg)
    assert main(["encode", f"dvae_weights={weights}", f"input={out}", f"output={tmp_path / 'tokens'}",
                 "device=cpu"]) == 0
    assert keys(tmp_path / "tokens" / "val") == keys(out / "val")
    assert keys(tmp_path / "tokens") == keys(out)
    sample = next(iter_samples(tmp_path / "tokens" / "val", ["codes.npy"]))
    assert sample["codes.npy"].shape == (8, 8) and sample["codes.npy"].dtype == np.uint16
