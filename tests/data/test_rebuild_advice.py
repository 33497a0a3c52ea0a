"""The advice on a changed prepare output is the command that made it: run as printed, from another folder, it
rebuilds the same folder. Given input and output alone it rebuilt at the default 256 px without the val split
(or, for a 32 px source, skipped every image as too_small after removing val/ and index.json)."""
import json
import shlex

import pytest

from megadalle.cli import main
from megadalle.data.coverage import OutputChanged
from megadalle.data.shards import open_index

from .conftest import jpeg_bytes


def _index(root):
    return json.loads((root / "index.json").read_text())


def test_the_advised_prepare_run_as_printed_from_elsewhere_rebuilds_the_folder_and_its_val_split(tmp_path,
                                                                                                 monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "pics").mkdir(parents=True)
    elsewhere.mkdir()
    for i in range(20):
        (work / "pics" / f"p{i}.jpg").write_bytes(jpeg_bytes((32, 32), i))
        (work / "pics" / f"p{i}.txt").write_text(f"picture {i}")
    monkeypatch.chdir(work)
    assert main(["prepare", "input=pics", "output=shards", "image_size=32", "min_side=32", "val_fraction=0.2",
                 "shard_max_samples=4", "format=png", "num_workers=0"]) == 0
    shards = work / "shards"
    made, made_val = _index(shards), _index(shards / "val")
    assert made_val["total"] > 0

    monkeypatch.chdir(elsewhere)
    with open(shards / "shard-000000.tar", "r+b") as tar:
        tar.truncate(tar.seek(0, 2) - 2000)
    with pytest.raises(OutputChanged) as changed:
        open_index(shards)
    command = str(changed.value).partition("rebuild it with `")[2].partition("`")[0]
    assert command == (f"megadalle prepare input={work / 'pics'} output={shards} image_size=32 format=png "
                       "min_side=32 shard_max_samples=4 val_fraction=0.2")
    assert main(shlex.split(command)[1:]) == 0
    assert _index(shards) == made and _index(shards / "val") == made_val


@pytest.mark.parametrize("value", ["/data/a,b", "/data/it's", "/data/\u00e9t\u00e9", "2024", "/data/a b", "/data/${x}",
                                   "/data/${x}/${y}", "/data/a\\${x}", '/data/a"${x}', "/data/${x}\\", "/data/a,b\\"])
def test_a_recorded_path_hydra_would_misread_is_quoted_in_the_advice(value):
    """A comma (a sweep), an apostrophe or a letter outside ASCII (syntax) in a recorded path: the advice quotes it
    for hydra, so that it reads as the path. A `${` came out as it was, an interpolation, and a backslash that ended
    the value ended the quotes."""
    from megadalle.config.compose import compose
    from megadalle.config.override import override_word

    word = shlex.split(override_word("input", value))
    assert len(word) == 1 and compose("prepare", [*word, "output=/out"]).input == value
    assert override_word("max_aspect", None) == "max_aspect=null"
