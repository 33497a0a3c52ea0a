"""Captions end at a line break only, and a caption needs a visible character: scraped text is full of
Unicode separators inside a sentence and of zero-width or control characters with nothing else."""
from __future__ import annotations

import json

import pytest

from megadalle.data.captions import caption_lines
from megadalle.data.prepare import prepare
from megadalle.data.shards import ShardWriter, iter_samples
from megadalle.data.sources import find_items
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import config, put

INSIDE = ["a dog\u2028running on the beach", "a dog\u2029running", "a dog\x85running", "a dog\x0crunning",
          "a dog\x1crunning", "a dog\x1drunning", "a dog\x1erunning", "a dog\x0brunning"]


@pytest.mark.parametrize("caption", INSIDE)
def test_a_separator_inside_a_line_does_not_split_the_caption(caption):
    assert caption_lines(caption) == [caption]


def test_lines_end_at_newline_crlf_and_lone_cr():
    assert caption_lines("one\ntwo\r\nthree\rfour\r\n\r\n") == ["one", "two", "three", "four"]


@pytest.mark.parametrize("blank", ["\u200b", "\ufeff\u2060", "\u200b\ufeff\u200b", "\x00\x01\x02", " \t\u00a0\u3000",
                                   "\u200d \u200c", "\x7f"])
def test_a_line_without_a_visible_character_is_no_caption(blank):
    assert caption_lines(f"{blank}\nreal caption\n{blank}") == ["real caption"]
    assert caption_lines(blank) == []


def test_prepare_keeps_a_caption_whole_and_skips_invisible_ones_as_empty(tmp_path):
    root = tmp_path / "in"
    put(root, "dog.jpg", jpeg_bytes((40, 40), 1), "a dog\u2028running on the beach\x0cwith a ball\r\nsecond\rthird")
    put(root, "zw.jpg", jpeg_bytes((40, 40), 2), "\u200b\ufeff\u200b\n\u2060")
    put(root, "ctl.jpg", jpeg_bytes((40, 40), 3), b"\x00\x01\x02")
    (tmp_path / "zw2.jpg").write_bytes(jpeg_bytes((40, 40), 4))
    (tmp_path / "m.jsonl").write_text('{"image": "zw2.jpg", "caption": "\\u200b"}\n')
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    (sample,) = iter_samples(tmp_path / "out", ["txt", "json"])
    assert sample["txt"] == "a dog\u2028running on the beach\x0cwith a ball\nsecond\nthird"
    assert sample["json"]["captions"] == 3
    assert summary.skipped == {"empty_caption": 2}
    assert prepare(config(tmp_path / "m.jsonl", tmp_path / "out2"), progress=False).skipped == {"empty_caption": 1}


def test_a_shard_caption_is_split_and_checked_the_same_way(tmp_path):
    with ShardWriter(tmp_path / "shards") as w:
        w.write({"__key__": "a", "jpg": jpeg_bytes((40, 40), 1), "txt": "one\u2028caption\r\ntwo"})
        w.write({"__key__": "b", "jpg": jpeg_bytes((40, 40), 2), "txt": "\u200b\u2060"})
    summary = prepare(config(tmp_path / "shards", tmp_path / "out"), progress=False)
    assert [s["txt"] for s in iter_samples(tmp_path / "out", ["txt"])] == ["one\u2028caption\ntwo"]
    assert summary.skipped == {"empty_caption": 1}


def test_a_manifest_caption_keeps_a_separator_as_a_folder_caption_does(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": "a dog\u2028running\r\n\u200b\nfast"}) + "\n")
    (item,) = find_items(tmp_path / "m.jsonl")
    assert item.captions == ("a dog\u2028running fast",)
