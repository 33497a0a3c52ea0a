"""Indexing tars written elsewhere, against hand-made tars: which samples are kept at the edges of min_side, what an
undecoded sample is judged by, and what the index and its report then say."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from megadalle.data.ingest import index_directory
from tests.data.conftest import jpeg_bytes


def tar_of(root, members, name="00000.tar"):
    """A tar at root/name holding `members` ((member name, bytes)) in order, as tar(1) writes them."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / name, "w") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def report(root) -> list[tuple[str, str, str]]:
    return [(b["key"], b["reason"], b["detail"]) for b in json.loads((root / "index-report.json").read_text())["bad"]]


@pytest.mark.parametrize("decode", [True, False])
def test_an_image_of_exactly_min_side_is_kept_and_a_strip_below_it_skipped(tmp_path, decode):
    """The short side decides, whatever the long one."""
    root = tar_of(tmp_path / "t", [("edge.jpg", jpeg_bytes((48, 60), 1)), ("edge.txt", b"exactly min_side"),
                                   ("strip.jpg", jpeg_bytes((200, 47), 2)), ("strip.txt", b"a long strip")])
    summary = index_directory(root, ["txt"], True, decode=decode, min_side=48)
    assert (summary.kept, summary.skipped) == (1, {"too_small": 1})
    assert report(root) == [("strip", "too_small", "200x47: short side < min_side=48")]


def test_undecoded_an_image_field_no_decoder_knows_is_skipped_naming_it(tmp_path):
    """decode=false reads only the header of the image min_side judges: one that has none is no image."""
    root = tar_of(tmp_path / "t", [("k1.jpg", b"not a jpeg at all"), ("k1.txt", b"a caption"),
                                   ("k2.jpg", jpeg_bytes((64, 64), 2)), ("k2.txt", b"a photo")])
    summary = index_directory(root, ["txt"], True, decode=False, min_side=32)
    assert (summary.kept, summary.skipped) == (1, {"bad_jpg": 1})
    [(key, reason, detail)] = report(root)
    assert (key, reason) == ("k1", "bad_jpg") and detail.startswith("jpg: UnidentifiedImageError: ")


def test_undecoded_a_caption_that_is_not_utf8_is_kept_as_the_readers_take_it(tmp_path):
    """decode=false trusts the fields: a caption in Latin-1 still has visible text (readers replace what is not
    UTF-8), and it stopped indexing with a UnicodeDecodeError."""
    root = tar_of(tmp_path / "t", [("k1.jpg", jpeg_bytes((32, 32), 1)), ("k1.txt", b"caf\xe9 au lait")])
    summary = index_directory(root, ["txt"], True, decode=False)
    assert (summary.kept, summary.skipped) == (1, {})


def test_a_jpeg_cut_after_its_header_is_skipped_as_bad(tmp_path):
    """Its header gives a size; only decoding every coefficient finds the pixels missing (a reader would fail)."""
    whole = jpeg_bytes((64, 64), 5)
    root = tar_of(tmp_path / "t", [("cut.jpg", whole[:len(whole) // 2]), ("cut.txt", b"half a photo"),
                                   ("ok.jpg", whole), ("ok.txt", b"a photo")])
    summary = index_directory(root, ["txt"], True)
    assert (summary.kept, summary.skipped) == (1, {"bad_jpg": 1})
    assert [key for key, _, _ in report(root)] == ["cut"]


def test_a_token_sample_of_codes_and_a_caption_has_media_to_train_on(tmp_path):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.uint16).reshape(2, 2))
    root = tar_of(tmp_path / "t", [("k1.codes.npy", buf.getvalue()), ("k1.txt", b"four codes"),
                                   ("k2.txt", b"nothing to train on")])
    summary = index_directory(root, ["txt"], True)
    assert (summary.kept, summary.skipped) == (1, {"no_media": 1})
    assert [key for key, _, _ in report(root)] == ["k2"]


def test_a_key_that_comes_back_later_in_the_tar_is_counted_as_a_duplicate(tmp_path):
    root = tar_of(tmp_path / "t", [("a.jpg", jpeg_bytes((32, 32), 1)), ("a.txt", b"first a"),
                                   ("b.jpg", jpeg_bytes((32, 32), 2)), ("b.txt", b"b"),
                                   ("a.jpg", jpeg_bytes((32, 32), 3)), ("a.txt", b"second a")])
    summary = index_directory(root, ["txt"], True)
    assert (summary.kept, summary.skipped) == (2, {"duplicate_key": 1})
    assert report(root) == [("a", "duplicate_key", "the key appears twice in this shard (members not adjacent?)")]


def test_the_index_lists_the_fields_of_the_kept_samples_only(tmp_path):
    """A reader asking for a field the index lists must find it: a skipped sample's fields are not the data's."""
    root = tar_of(tmp_path / "t", [("k1.jpg", jpeg_bytes((32, 32), 1)), ("k1.txt", b"kept"),
                                   ("k2.json", b'{"url": "x"}'), ("k2.cls", b"3"), ("k2.txt", b"no image")])
    summary = index_directory(root, ["txt"], True)
    assert summary.index.fields == ["jpg", "txt"]
    assert json.loads((root / "index.json").read_text())["fields"] == ["jpg", "txt"]


def test_a_cut_tar_is_reported_under_its_last_sample_key(tmp_path):
    """The cut's entry names the sample it cost, which is what a user looks for in the tar."""
    root = tar_of(tmp_path / "t", [(f"k{i}.{field}", jpeg_bytes((32, 32), i) if field == "jpg" else b"words")
                                   for i in range(3) for field in ("jpg", "txt")])
    with tarfile.open(root / "00000.tar") as tar:
        last = tar.getmembers()[-1]
    members_end = last.offset_data + -(-last.size // 512) * 512  # the end-of-archive blocks cut off
    (root / "00000.tar").write_bytes((root / "00000.tar").read_bytes()[:members_end])
    summary = index_directory(root, ["txt"], True)
    assert (summary.kept, summary.skipped) == (2, {"truncated_shard": 1})
    assert report(root) == [("k2", "truncated_shard", "no end-of-archive marker: the tar was cut; its last sample "
                                                      "dropped")]


def test_a_read_error_mid_tar_keeps_the_samples_before_it_and_counts_it(tmp_path, monkeypatch):
    """An I/O error (a failing disk, a network file system) is that tar's loss, not the whole indexing's."""
    from megadalle.data.ingest import shard

    root = tar_of(tmp_path / "t", [(f"k{i}.{field}", jpeg_bytes((32, 32), i) if field == "jpg" else b"words")
                                   for i in range(3) for field in ("jpg", "txt")])
    real_walk = shard.walk

    def failing_walk(f, *args, **kwargs):
        for n, sample in enumerate(real_walk(f, *args, **kwargs)):
            if n == 2:
                raise OSError(5, "Input/output error")
            yield sample

    monkeypatch.setattr(shard, "walk", failing_walk)
    summary = index_directory(root, ["txt"], True)
    assert (summary.kept, summary.skipped) == (2, {"truncated_shard": 1})
    assert report(root) == [("", "truncated_shard", "OSError: [Errno 5] Input/output error (samples after this point "
                                                    "are lost)")]


def test_a_tar_with_no_usable_sample_is_left_out_of_the_index(tmp_path):
    root = tar_of(tmp_path / "t", [("a.jpg", jpeg_bytes((32, 32), 1)), ("a.txt", b"good")], name="00000.tar")
    tar_of(root, [("b.txt", b"no image"), ("c.jpg", jpeg_bytes((32, 32), 2))], name="00001.tar")
    summary = index_directory(root, ["txt"], True)
    assert [s.name for s in summary.index.shards] == ["00000.tar"]
    assert [s["name"] for s in json.loads((root / "index.json").read_text())["shards"]] == ["00000.tar"]
    assert not (root / "00001.tar.idx").exists()


def test_a_stop_while_indexing_in_this_process_ends_it_before_the_next_tar(tmp_path):
    """num_workers=0 reads the tars itself: a stop signal between two of them ends indexing, publishing nothing."""
    from megadalle.data.ingest.folder import IndexingStopped

    root = tar_of(tmp_path / "t", [("a.jpg", jpeg_bytes((32, 32), 1)), ("a.txt", b"first")], name="00000.tar")
    tar_of(root, [("b.jpg", jpeg_bytes((32, 32), 2)), ("b.txt", b"second")], name="00001.tar")
    asked = []

    def stopped():
        asked.append(True)
        return len(asked) > 1  # the signal comes while the first tar is read

    with pytest.raises(IndexingStopped, match=f"stopped by signal while indexing {root}"):
        index_directory(root, ["txt"], True, num_workers=0, stopped=stopped)
    assert not (root / "index.json").exists() and not (root / "00001.tar.idx").exists()


def test_a_folder_grown_since_its_indexing_is_indexed_again_with_its_min_side(tmp_path, capsys):
    """A reader that finds new tars indexes them as `megadalle index min_side=48` did the first ones."""
    from megadalle.data.ingest import open_index

    root = tar_of(tmp_path / "t", [("a.jpg", jpeg_bytes((64, 64), 1)), ("a.txt", b"a photo"),
                                   ("thumb.jpg", jpeg_bytes((40, 40), 2)), ("thumb.txt", b"a thumbnail")])
    assert index_directory(root, ["txt"], True, min_side=48).kept == 1
    tar_of(root, [("b.jpg", jpeg_bytes((64, 64), 3)), ("b.txt", b"another photo"),
                  ("thumb2.jpg", jpeg_bytes((40, 40), 4)), ("thumb2.txt", b"another thumbnail")], name="00001.tar")
    index = open_index(root)
    assert (index.total, index.indexing["min_side"]) == (2, 48)
    assert [key for key, reason, _ in report(root) if reason == "too_small"] == ["thumb", "thumb2"]


def test_verify_names_counts_that_disagree_and_samples_lacking_a_field(tmp_path):
    from megadalle.data.ingest import verify
    from megadalle.data.shards import ShardWriter

    with ShardWriter(tmp_path, max_count=3) as w:
        for i in range(5):
            w.write({"__key__": f"{i:03d}", "txt": f"caption {i}", **({"json": {"i": i}} if i != 4 else {})})
    assert verify(tmp_path, ["txt", "json"]) == ["shard-000001.tar: sample '004' lacks ['json']"]
    data = json.loads((tmp_path / "index.json").read_text())
    data["shards"][0]["count"] = 2
    (tmp_path / "index.json").write_text(json.dumps(data))
    assert verify(tmp_path)[0] == "shard-000000.tar: 3 samples in its offsets, index.json says 2"


def test_the_index_verb_keeps_caption_only_samples_with_require_media_false(tmp_path, capsys):
    """A caption corpus for tokenizer training has no media: `require_media=false` is how to index it."""
    from megadalle.cli import main

    root = tar_of(tmp_path / "t", [("a.txt", b"only words"), ("b.jpg", jpeg_bytes((32, 32), 1)), ("b.txt", b"a photo")])
    assert main(["index", str(root), "num_workers=0"]) == 0
    assert json.loads((root / "index.json").read_text())["total"] == 1
    assert main(["index", str(root), "num_workers=0", "require_media=false"]) == 0
    assert json.loads((root / "index.json").read_text())["total"] == 2
