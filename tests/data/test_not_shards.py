"""A folder given where shards are read that holds images or compressed tars instead: the error says what it holds
and what to do (`megadalle index DIR`, which readers advised, found no *.tar to index)."""
from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from megadalle.cli import main
from megadalle.data.index import ShardsNotFound
from megadalle.data.shards import open_index
from megadalle.encoded_split import STAGING
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import put


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    put(root, "sub/cat.jpg", jpeg_bytes((40, 40), 1), "a cat")
    return root


@pytest.fixture
def gz_tars(tmp_path, images):
    """What webdataset streams but megadalle cannot seek in: two .tar.gz shards."""
    root = tmp_path / "gz"
    root.mkdir()
    for name in ("00000.tar.gz", "00001.tgz"):
        with tarfile.open(root / name, "w:gz") as tar:
            tar.add(images / "sub/cat.jpg", "cat.jpg")
            tar.add(images / "sub/cat.txt", "cat.txt")
    return root


def test_an_image_folder_given_as_shards_says_to_prepare_it(images, tmp_path, capsys):
    with pytest.raises(ShardsNotFound, match=rf"{images} holds images \(sub/cat.jpg, ...\), not shards: make shards "
                                             rf"of them with `megadalle prepare input={images} output=SHARDS`"):
        open_index(images)
    assert main(["index", str(images)]) == 2
    assert main(["tokenizer", f"input={images}", f"output={tmp_path / 'tok.model'}"]) == 2
    for line in capsys.readouterr().err.splitlines():
        assert f"`megadalle prepare input={images} output=SHARDS`" in line and "`megadalle index" not in line


def test_compressed_tars_are_named_as_unread_and_to_decompress(gz_tars, tmp_path, capsys):
    with pytest.raises(ShardsNotFound, match=r"holds 2 compressed tars \(00000.tar.gz, ...\), which megadalle does "
                                             r"not read .*: decompress them into plain .tar files"):
        open_index(gz_tars)
    assert main(["index", str(gz_tars)]) == 2
    assert main(["prepare", f"input={gz_tars}", f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("compressed tars" in line and "decompress" in line for line in err)
    assert not (tmp_path / "out").exists()


def test_prepare_names_a_compressed_tar_among_images(images, gz_tars, tmp_path, capsys):
    shutil.copy(gz_tars / "00000.tar.gz", images)
    out = tmp_path / "out"
    assert main(["prepare", f"input={images}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0"]) == 0
    assert "skipped      1  unrecognised_file: 1 of them compressed tars, which megadalle does not read: decompress" \
        in capsys.readouterr().out
    (bad,) = json.loads((out / "report.json").read_text())["bad"]
    assert bad["source"] == "00000.tar.gz" and "a compressed tar" in bad["detail"] and "decompress" in bad["detail"]


def test_compressed_tars_beside_plain_ones_are_named_as_left_out(gz_tars, tmp_path, capsys):
    """index, and prepare indexing its input, read the plain tars and left the compressed ones out without a word."""
    mixed = tmp_path / "mixed"
    shutil.copytree(gz_tars, mixed)
    with tarfile.open(mixed / "00002.tar", "w") as tar, tarfile.open(gz_tars / "00000.tar.gz") as gz:
        for member in gz.getmembers():
            tar.addfile(member, gz.extractfile(member))
    again = tmp_path / "again"
    shutil.copytree(mixed, again)
    assert main(["index", str(mixed)]) == 0
    assert "left out: " + f"{mixed} holds 2 compressed tars (00000.tar.gz, ...), which megadalle does not read" \
        in capsys.readouterr().out
    assert main(["prepare", f"input={again}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=32",
                 "num_workers=0"]) == 0
    assert "left out: " + f"{again} holds 2 compressed tars" in capsys.readouterr().err


def test_an_empty_folder_says_it_holds_no_shards(tmp_path):
    with pytest.raises(ShardsNotFound, match="holds no \\*.tar shards: `megadalle prepare` makes them"):
        open_index(tmp_path)


def test_an_unfinished_split_output_keeps_the_unfinished_message(tmp_path):
    """Shards in a hidden staging folder and no index.json (a parallel encode that has not finished) are no image
    folder and not empty."""
    (tmp_path / f"{STAGING}0").mkdir()
    (tmp_path / f"{STAGING}0/shard-000000.tar").write_bytes(b"")
    with pytest.raises(ShardsNotFound, match="not a finished megadalle shard directory"):
        open_index(tmp_path)


@pytest.mark.parametrize("verb", ["tokenizer", "train-dvae"])
def test_tars_in_a_subfolder_are_named_with_the_folder_to_pass(tmp_path, capsys, verb):
    """The readers advised `megadalle index DIR`, which then refused the same tars (nested.py)."""
    (tmp_path / "nest/sub").mkdir(parents=True)
    (tmp_path / "nest/sub/shard-000000.tar").write_bytes(b"")
    args = [f"input={tmp_path / 'nest'}", f"output={tmp_path / 'tok.model'}"] if verb == "tokenizer" else \
        [f"data.shards={tmp_path / 'nest'}", "dvae=tiny", "trainer=tiny", "logger=none"]
    assert main([verb, *args]) == 2
    err = capsys.readouterr().err
    assert "holds 1 .tar file in subfolders (sub/shard-000000.tar)" in err and "megadalle index" not in err
    assert f"pass {tmp_path / 'nest' / 'sub'} on its own" in err


def test_tars_with_no_usable_sample_say_so_not_to_index_them(tmp_path, capsys):
    """prepare indexed the folder, kept nothing, and then advised `megadalle index DIR`: what it had just done."""
    root = tmp_path / "tars"
    root.mkdir()
    image = put(tmp_path / "src", "x.jpg", jpeg_bytes((40, 40), 1), caption=None)
    with tarfile.open(root / "a.tar", "w") as tar:
        tar.add(image, "k.jpg")  # no caption
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "num_workers=0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"indexing {root} kept no sample of its tars (1 missing_field); {root / 'index-report.json'} lists why each "
        "was skipped")
