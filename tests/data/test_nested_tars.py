"""Tars in subfolders of a folder read as shards were left out without a word: they are refused by name, with the
folder to pass; an image folder's tar gets its own reason in the report."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from megadalle.cli import main
from megadalle.data.nested import nested_tars
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import put


def shard(path, keys):
    """A webdataset tar of `keys`, each a 40x40 jpg with a caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, key in enumerate(keys):
            for field, data in (("jpg", jpeg_bytes((40, 40), i)), ("txt", f"caption {key}".encode())):
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "mixed"
    shard(root / "00000.tar", ["a", "b"])
    shard(root / "more/00002.tar", ["c", "d"])
    return root


@pytest.mark.parametrize("verb", ["prepare", "index"])
def test_a_tar_in_a_subfolder_beside_top_level_tars_is_refused_by_name(verb, mixed, tmp_path, capsys):
    args = [f"input={mixed}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=1"] if verb == "prepare" \
        else [f"dir={mixed}"]
    assert main([verb, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "more/00002.tar" in err and f"pass {mixed / 'more'} on its own" in err
    assert not (tmp_path / "out").exists() and not (mixed / "index.json").exists()


def test_tars_only_in_subfolders_are_refused_not_read_as_an_image_folder(tmp_path, capsys):
    root = tmp_path / "fof"
    shard(root / "part1/00000.tar", ["a"])
    shard(root / "part2/00002.tar", ["b"])
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "2 .tar files in subfolders (part1/00000.tar, part2/00002.tar)" in err
    assert main(["index", f"dir={root}"]) == 2
    assert "part1/00000.tar" in capsys.readouterr().err


def test_a_tar_in_an_image_folder_is_reported_as_such(tmp_path):
    root = tmp_path / "imgs"
    put(root, "cat.jpg", jpeg_bytes((40, 40), 1), "a cat")
    shard(root / "sub/x.tar", ["a"])
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=1",
                 "num_workers=0"]) == 0
    bad = json.loads((tmp_path / "out/report.json").read_text())["bad"]
    assert [(b["source"], b["reason"]) for b in bad] == [("sub/x.tar", "unrecognised_file")]
    assert bad[0]["detail"].startswith("a tar in a subfolder of an image folder")


def test_the_validation_split_and_hidden_staging_are_no_nested_tars(tmp_path):
    shard(tmp_path / "shard-000000.tar", ["a"])
    shard(tmp_path / "val/shard-000000.tar", ["b"])
    shard(tmp_path / ".encode-shard-000001.tar/shard-000000.tar", ["c"])
    shard(tmp_path / "deep/val/x.tar", ["d"])
    assert nested_tars(tmp_path) == ["deep/val/x.tar"]
