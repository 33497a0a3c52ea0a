"""A `val/` in encode's output that encode did not write stays as it is (encoded_split.py `_written_as_split`).

Encode removes only a validation split it carried over itself, when the input it encodes has none any more. A
`val/` whose index.json also says {"split": "val"} but that `prepare` wrote (a prepared split the user copied into
the output) is the user's validation set: taken for encode's own, it was refused as a split of encode's holding
files encode did not write, and would have been deleted had it held only files of encode's names. The index's
split mark alone proves nothing; only one that encode wrote does.
"""
from __future__ import annotations

import shutil

from megadalle.cli import main
from megadalle.data.index import ShardIndex
from megadalle.models.dvae import DVAE
from megadalle.weights import save_weights
from tests.dvae.conftest import png, rectangles, write_image_shards
from tests.dvae.file_bytes import file_bytes


def _prepared_split(tmp_path):
    """`prepare`'s own validation split of 8 pictures (val_fraction=0.5), as the folder prepare wrote it."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for i, image in enumerate(rectangles(8, 32, seed=5)):
        (pics / f"p{i}.png").write_bytes(png(image))
        (pics / f"p{i}.txt").write_text(f"picture {i}")
    prepared = tmp_path / "prepared"
    assert main(["prepare", f"input={pics}", f"output={prepared}", "image_size=32", "min_side=32", "num_workers=0",
                 "val_fraction=0.5"]) == 0
    index = ShardIndex.load(prepared / "val")
    assert index.meta.get("split") == "val" and index.total > 0, index.meta
    return prepared / "val"


def test_a_prepared_split_in_the_output_is_left_byte_for_byte(tmp_path, small_dvae_config, capsys):
    weights = tmp_path / "dvae.safetensors"
    save_weights(weights, DVAE(small_dvae_config).state_dict(), kind="dvae", config=small_dvae_config)
    whole = tmp_path / "whole"
    write_image_shards(whole, 8, 32, 8, seed=3)
    out = tmp_path / "tokens"
    shutil.copytree(_prepared_split(tmp_path), out / "val")
    before = file_bytes(out / "val")
    argv = ["encode", f"dvae_weights={weights}", f"input={whole}", f"output={out}", "device=cpu"]
    for _ in range(2):  # into a new output, then over its own earlier one
        capsys.readouterr()
        assert main(argv) == 0, capsys.readouterr().err
        assert "removed the validation split" not in capsys.readouterr().err
        assert file_bytes(out / "val") == before
        assert ShardIndex.load(out).total == 8
