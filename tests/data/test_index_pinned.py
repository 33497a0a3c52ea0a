"""index.json and the offset files as a user and a resumed run see them, each against a hand-made shard list: the
fingerprint a checkpoint records, global ids at the edges, what a load refuses, what `combine` publishes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from megadalle.data.index import ShardIndex, ShardInfo, load_offsets, save_offsets

SHARDS = [ShardInfo("a.tar", 4, 10240), ShardInfo("b.tar", 4, 10240), ShardInfo("c.tar", 2, 6144)]


def test_the_fingerprint_is_the_one_checkpoints_recorded(tmp_path):
    """A checkpoint holds the fingerprint of its shards: the same shard list must give the same 16 hex digits in
    every version, or every resume is refused as other data. The value: the first 16 hex digits of the SHA-256 of
    the JSON list of [name, count, bytes], worked out once by hand for these three shards."""
    listing = b'[["a.tar", 4, 10240], ["b.tar", 4, 10240], ["c.tar", 2, 6144]]'
    assert ShardIndex(tmp_path, SHARDS).fingerprint == hashlib.sha256(listing).hexdigest()[:16]
    assert ShardIndex(tmp_path, SHARDS).fingerprint == "4b8f4bc8c9d02b89"


def test_the_fingerprint_tells_a_shard_resized_or_reordered(tmp_path):
    fingerprint = ShardIndex(tmp_path, SHARDS).fingerprint
    resized = [SHARDS[0], ShardInfo("b.tar", 4, 10752), SHARDS[2]]
    reordered = [SHARDS[1], SHARDS[0], SHARDS[2]]
    assert fingerprint not in (ShardIndex(tmp_path, resized).fingerprint, ShardIndex(tmp_path, reordered).fingerprint)


def test_global_ids_at_the_edges_of_shards_and_of_the_data(tmp_path):
    index = ShardIndex(tmp_path, SHARDS)
    shard, position = index.locate(np.array([0, 3, 4, 7, 8, 9]))
    assert shard.tolist() == [0, 0, 1, 1, 2, 2] and position.tolist() == [0, 3, 0, 3, 0, 1]
    for outside in (10, -1):
        with pytest.raises(IndexError, match=r"sample ids must be in \[0, 10\)"):
            index.locate(np.array([outside]))


def test_index_json_states_the_total(tmp_path):
    ShardIndex(tmp_path, SHARDS).save()
    assert json.loads((tmp_path / "index.json").read_text())["total"] == 10


def test_offsets_past_2_gib_survive_the_offset_file(tmp_path):
    """A shard over 2 GiB (shard_max_bytes allows it) has offsets int32 cannot hold."""
    offsets = np.array([0, 2**31 + 512, 2**33 + 1024], dtype=np.int64)
    save_offsets(tmp_path / "big.tar", offsets)
    assert load_offsets(tmp_path / "big.tar").tolist() == [0, 2**31 + 512, 2**33 + 1024]


def write_index(root, **changes):
    """A finished-looking index.json of SHARDS at `root`, with `changes` made to its JSON."""
    root.mkdir(parents=True, exist_ok=True)
    data = {**ShardIndex(root, SHARDS).to_json(), **changes}
    (root / "index.json").write_text(json.dumps(data))
    return root


def test_an_index_of_another_format_is_refused_naming_both_formats(tmp_path):
    root = write_index(tmp_path, format="megadalle-shards/2")
    with pytest.raises(ValueError, match=r"format 'megadalle-shards/2', expected 'megadalle-shards/1'"):
        ShardIndex.load(root)
    assert ShardIndex.readable(root) is None


def test_an_index_whose_shards_hold_no_sample_is_refused(tmp_path):
    root = write_index(tmp_path, shards=[{"name": "a.tar", "count": 0, "bytes": 1024}])
    with pytest.raises(ValueError, match="the index lists no samples"):
        ShardIndex.load(root)


def test_an_index_json_that_is_not_json_is_no_readable_index(tmp_path):
    (tmp_path / "index.json").write_text('{"format": "megadalle-sha')
    assert ShardIndex.readable(tmp_path) is None


def test_the_index_json_keeps_its_meta_and_indexing_record(tmp_path):
    root = write_index(tmp_path, meta={"image_size": 32}, indexing={"require": ["txt"], "tars": []})
    index = ShardIndex.load(root)
    assert (index.meta, index.indexing) == ({"image_size": 32}, {"require": ["txt"], "tars": []})
    index.save()
    assert json.loads((root / "index.json").read_text())["meta"] == {"image_size": 32}


def test_combine_unions_the_parts_fields_and_meta_and_its_own_meta_wins(tmp_path):
    from megadalle.data.index import combine

    for part, fields, meta in (("p0", ["txt", "codes.npy", "cls"], {"grid": 4, "dvae": "d1"}),
                               ("p1", ["json", "txt", "id"], {"split": "train"})):
        write_index(tmp_path / part, fields=fields, meta=meta)
    combine(tmp_path, [tmp_path / "p0", tmp_path / "p1"], meta={"dvae": "d2"})
    data = json.loads((tmp_path / "index.json").read_text())
    assert data["fields"] == ["cls", "codes.npy", "id", "json", "txt"]
    assert data["meta"] == {"grid": 4, "dvae": "d2", "split": "train"}
    assert [s["name"] for s in data["shards"]] == ["p0/a.tar", "p0/b.tar", "p0/c.tar", "p1/a.tar", "p1/b.tar",
                                                   "p1/c.tar"] and data["total"] == 20


def test_one_compressed_tar_in_capitals_is_named_in_the_singular(tmp_path):
    from megadalle.data.index import compressed_note

    (tmp_path / "00000.TAR.GZ").write_bytes(b"\x1f\x8b")
    assert compressed_note(tmp_path) == (
        f"{tmp_path} holds 1 compressed tar (00000.TAR.GZ), which megadalle does not read (it seeks to each sample "
        "in a tar): decompress it into plain .tar files (gunzip, zstd -d, ...)")


@pytest.mark.parametrize("kept", [0, 3])
def test_a_missing_index_names_an_indexing_that_kept_nothing_and_only_that(tmp_path, kept):
    """The report of an indexing that kept samples (its index.json since removed) is no reason to say none was."""
    (tmp_path / "00000.tar").write_bytes(bytes(1024))
    report = {"kept": kept, "skipped": {"missing_field": 2, "bad_jpg": 1}}
    (tmp_path / "index-report.json").write_text(json.dumps(report))
    with pytest.raises(FileNotFoundError) as raised:
        ShardIndex.load(tmp_path)
    said = f"indexing {tmp_path} kept no sample of its tars (2 missing_field, 1 bad_jpg); "
    assert (said in str(raised.value)) is (kept == 0)


@pytest.mark.parametrize("report, said", [
    ({"kept": 0, "skipped": {}}, "kept no sample of its tars (they hold none); "),
    ([0, 1], "is not a finished megadalle shard directory"),  # not a report megadalle wrote: the usual words
])
def test_a_missing_index_beside_an_odd_report_still_gets_one_message(tmp_path, report, said):
    (tmp_path / "00000.tar").write_bytes(bytes(1024))
    (tmp_path / "index-report.json").write_text(json.dumps(report))
    with pytest.raises(FileNotFoundError, match=said.replace("(", r"\(").replace(")", r"\)")):
        ShardIndex.load(tmp_path)


def test_a_folder_of_camera_images_in_capitals_is_named_as_images_to_prepare(tmp_path):
    from megadalle.data.index import not_shards

    (tmp_path / "DCIM").mkdir()
    (tmp_path / "DCIM" / "IMG_0001.JPG").write_bytes(b"\xff\xd8\xff")
    assert not_shards(tmp_path).startswith(f"{tmp_path} holds images (DCIM/IMG_0001.JPG, ...), not shards: ")


def test_spans_back_to_back_are_stored_as_starts_and_spans_with_a_gap_as_pairs():
    """The two layouts of an offset file: `[count + 1]` starts when no sample was left out between, else
    `[count, 2]` (start, end) pairs, so that a reader never reads the sample left out."""
    from megadalle.data.index import compact, offsets_count, to_spans

    assert compact(np.array([[0, 1536], [1536, 4096], [4096, 5120]])).tolist() == [0, 1536, 4096, 5120]
    gap = np.array([[0, 1536], [2048, 4096]])
    assert compact(gap).tolist() == [[0, 1536], [2048, 4096]]
    assert to_spans(np.array([0, 1536, 4096])).tolist() == [[0, 1536], [1536, 4096]]
    assert to_spans(gap).tolist() == [[0, 1536], [2048, 4096]]
    assert offsets_count(np.array([0, 1536, 4096])) == offsets_count(gap) == 2
