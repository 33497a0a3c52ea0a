"""Indexing a folder again reads only its new and changed tars, and writes what indexing every tar writes."""
from __future__ import annotations

import json

import pytest
import webdataset as wds

from megadalle.data.ingest import folder as ingest
from megadalle.data.index import INDEX_NAME, REPORT_NAME, ShardIndex
from megadalle.data.shards import index_directory, open_index
from tests.data.conftest import jpeg_bytes


def _tar(root, name, keys, size=16, bad=(), json_of=()):
    """A TarWriter shard with a good sample per key; keys in `bad` carry a cut jpeg (skipped), keys in `json_of` a
    json field, a cut one (a warning) when the key ends in "cut"."""
    with wds.TarWriter(str(root / name)) as sink:
        for n, key in enumerate(keys):
            image = jpeg_bytes((size, size), n + 7 * len(name))
            sample = {"__key__": key, "jpg": image[:150] if key in bad else image, "txt": f"caption {key}"}
            if key in json_of:
                sample["json"] = b'{"url": "ht' if key.endswith("cut") else b'{"url": "x"}'
            sink.write(sample)


@pytest.fixture
def folder(tmp_path):
    """img2dataset half way: three tars, with skipped samples and warnings in two of them."""
    root = tmp_path / "dl"
    root.mkdir()
    _tar(root, "00000.tar", ["a0", "a1", "a2cut", "a_bad"], bad={"a_bad"}, json_of={"a1", "a2cut"})
    _tar(root, "00001.tar", ["b0", "b1", "b2cut"], json_of={"b2cut"})
    _tar(root, "00002.tar", ["c0", "c1", "c_bad"], bad={"c_bad"})
    return root


@pytest.fixture
def reads(monkeypatch):
    """The names of the tars indexing reads (in this process: num_workers=0)."""
    names = []
    real = ingest.index_shard

    def counted(path, *args, **kwargs):
        names.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "index_shard", counted)
    return names


def _written(root):
    """What indexing wrote: index.json, the report and every offset file, as bytes."""
    paths = [root / INDEX_NAME, root / REPORT_NAME, *sorted(root.glob("*.idx"))]
    return {path.name: path.read_bytes() for path in paths}


def _indexed_again(root, monkeypatch, reads):
    """Index `root` again, then check that indexing every tar writes the same bytes; the incremental summary, with
    `reads` the tars it read."""
    reads.clear()
    summary = index_directory(root, ["txt"], True)
    incremental, read = _written(root), list(reads)
    with monkeypatch.context() as patch:
        patch.setattr(ingest, "reusable", lambda *args: {})  # what indexing did before it kept anything
        full = index_directory(root, ["txt"], True)
    assert full.read == full.tars
    assert _written(root) == incremental
    assert (summary.kept, summary.shards, summary.skipped, summary.warned, summary.bad, summary.warnings) == \
        (full.kept, full.shards, full.skipped, full.warned, full.bad, full.warnings)
    reads[:] = read
    return summary


def test_a_tar_added_is_the_only_one_read_and_the_index_is_a_full_ones(folder, reads, monkeypatch):
    index_directory(folder, ["txt"], True)
    assert reads == ["00000.tar", "00001.tar", "00002.tar"]
    _tar(folder, "00003.tar", ["d0", "d1cut", "d_bad"], bad={"d_bad"}, json_of={"d1cut"})
    summary = _indexed_again(folder, monkeypatch, reads)
    assert reads == ["00003.tar"] and (summary.read, summary.tars) == (1, 4)
    assert summary.kept == 10 and summary.skipped == {"bad_jpg": 3} and summary.warned == {"bad_json": 3}
    assert "read 1 of 4 tars: 3 unchanged since the last indexing" in summary.text()


def test_a_tar_whose_size_changed_is_read_again(folder, reads, monkeypatch):
    index_directory(folder, ["txt"], True)
    _tar(folder, "00001.tar", ["b0", "b1", "b2cut", "b3", "b_bad"], bad={"b_bad"}, json_of={"b2cut"})
    summary = _indexed_again(folder, monkeypatch, reads)
    assert reads == ["00001.tar"] and summary.kept == 9 and summary.skipped == {"bad_jpg": 3}
    assert ShardIndex.load(folder).shards[1].count == 4


def test_a_tar_removed_is_dropped_with_its_skips_and_nothing_is_read(folder, reads, monkeypatch):
    index_directory(folder, ["txt"], True)
    (folder / "00000.tar").unlink()
    summary = _indexed_again(folder, monkeypatch, reads)
    assert reads == [] and summary.kept == 5 and summary.skipped == {"bad_jpg": 1}
    assert [s.name for s in ShardIndex.load(folder).shards] == ["00001.tar", "00002.tar"]
    assert ShardIndex.load(folder).fields == ["jpg", "json", "txt"]
    (folder / "00001.tar").unlink()  # the only tar left whose samples carry json
    assert _indexed_again(folder, monkeypatch, reads).warned == {}
    assert reads == [] and ShardIndex.load(folder).fields == ["jpg", "txt"]


def test_the_image_size_follows_the_tars_indexed_in_increments(folder, reads, monkeypatch):
    """meta.image_size says every image is one square size: a tar of another size added takes it away, removed
    again gives it back, though neither indexing reads the other tars' images."""
    index_directory(folder, ["txt"], True)
    assert ShardIndex.load(folder).meta["image_size"] == 16
    _tar(folder, "00003.tar", ["d0"], size=24)
    _indexed_again(folder, monkeypatch, reads)
    assert reads == ["00003.tar"] and "image_size" not in ShardIndex.load(folder).meta
    (folder / "00003.tar").unlink()
    _indexed_again(folder, monkeypatch, reads)
    assert reads == [] and ShardIndex.load(folder).meta["image_size"] == 16


def test_a_tar_without_all_its_records_is_read_again(folder, reads, monkeypatch):
    """Its offset file gone, or a report that does not list its skipped samples (written elsewhere with report=,
    or deleted): what it holds is not known without reading it."""
    index_directory(folder, ["txt"], True)
    (folder / "00001.tar.idx").unlink()
    report = json.loads((folder / REPORT_NAME).read_text())
    report["bad"] = [bad for bad in report["bad"] if bad["shard"] != "00002.tar"]
    (folder / REPORT_NAME).write_text(json.dumps(report))
    _tar(folder, "00003.tar", ["d0"])
    _indexed_again(folder, monkeypatch, reads)
    assert reads == ["00001.tar", "00002.tar", "00003.tar"]
    (folder / REPORT_NAME).unlink()
    _indexed_again(folder, monkeypatch, reads)
    assert reads == ["00000.tar", "00001.tar", "00002.tar"]  # each has a skip or a warning; 00003.tar has none


def test_other_options_or_an_index_from_before_the_records_read_every_tar(folder, reads):
    index_directory(folder, ["txt"], True)
    reads.clear()
    index_directory(folder, ["txt"], True, decode=False)
    assert reads == ["00000.tar", "00001.tar", "00002.tar"]
    data = json.loads((folder / INDEX_NAME).read_text())
    for tar in data["indexing"]["tars"]:
        del tar["count"]
    (folder / INDEX_NAME).write_text(json.dumps(data))
    reads.clear()
    index_directory(folder, ["txt"], True, decode=False)
    assert reads == ["00000.tar", "00001.tar", "00002.tar"]


def test_a_reader_opening_a_grown_folder_says_how_many_tars_it_reads(folder, capsys):
    index_directory(folder, ["txt"], True)
    _tar(folder, "00003.tar", ["d0"])
    assert open_index(folder).total == 9
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[index]")]
    assert len(said) == 1 and "(new: 00003.tar); indexing them now, reading 1 of 4 tars (3 unchanged since)" in said[0]
