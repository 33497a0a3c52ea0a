"""A shard damaged after `prepare` wrote it (a bad copy, bit rot: sizes unchanged): `encode` stops with one line naming
the shard and the sample, and the image loader's error names them too (PIL's own names a BytesIO)."""
from __future__ import annotations

import shutil
import tarfile

import pytest

from megadalle.cli import main
from megadalle.data.loader import image_loader
from megadalle.models.dvae import DVAE
from megadalle.weights import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory, small_dvae_config):
    path = tmp_path_factory.mktemp("dvae") / "dvae.safetensors"
    save_weights(path, DVAE(small_dvae_config).state_dict(), kind="dvae", config=small_dvae_config)
    return path


@pytest.fixture
def damaged(tmp_path, image_shards):
    """The image shards with img0003's png zeroed in place."""
    root = shutil.copytree(image_shards, tmp_path / "images")
    shard = root / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        member = tar.getmember("img0003.png")
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(bytes(member.size))
    return root


def test_encode_names_the_shard_and_sample_whose_image_does_not_decode(tmp_path, damaged, weights, capsys):
    assert main(["encode", f"dvae_weights={weights}", f"input={damaged}", f"output={tmp_path / 'tokens'}",
                 "device=cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{damaged / 'shard-000000.tar'}:img0003: its image does not decode (UnidentifiedImageError" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "tokens/shard-000000.tar").exists()
    assert not list((tmp_path / "tokens").glob(".encode-*"))  # its staging folder goes too


def test_the_image_loader_names_the_shard_and_sample(damaged):
    loader = image_loader(damaged, global_batch=8, image_size=32, shuffle=False)
    with pytest.raises(RuntimeError, match=r"shard-000000\.tar:img0003: step 0, micro-batch 0: its image does not "
                                           r"decode"):
        next(iter(loader))


def test_a_caption_that_is_not_utf8_in_tars_indexed_without_decoding_is_named(tmp_path, weights, capsys):
    """`megadalle index decode=false` checks only which fields are there: a Latin-1 caption it kept was a
    UnicodeDecodeError traceback in encode."""
    import io

    from PIL import Image

    root = tmp_path / "foreign"
    root.mkdir()
    with tarfile.open(root / "00000.tar", "w") as tar:
        for key, text in (("a", "a red circle".encode()), ("b", "caf\xe9 au lait".encode("latin-1"))):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), "red").save(buf, "JPEG")
            for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert main(["index", f"dir={root}", "decode=false", "num_workers=0"]) == 0
    capsys.readouterr()
    assert main(["encode", f"dvae_weights={weights}", f"input={root}", f"output={tmp_path / 'tokens'}",
                 "device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith(
        f"megadalle encode: {root / '00000.tar'}:b: its caption is not UTF-8 (UnicodeDecodeError: ")
    assert "or was indexed without decoding (decode=false): index its folder again with `megadalle index`" in err
