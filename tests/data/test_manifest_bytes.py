"""A manifest row whose bytes are not UTF-8 is skipped and listed by its line, as a row of bad JSON is: one Latin-1
caption refused the whole manifest, at a position counted in the decoder's chunk, not the file."""
from __future__ import annotations

from megadalle.data.sources import find_items
from tests.data.conftest import jpeg_bytes


def problems(items) -> dict[str, tuple[str, str]]:
    return {item.source: item.problem for item in items if item.problem}


def test_a_jsonl_row_that_is_not_utf8_is_a_bad_row_named_by_its_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    good = b'{"image": "a.jpg", "caption": "a cat"}\n'
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + good * 5000 + b'{"image": "a.jpg", "caption": "caf\xe9"}\n'
                                       + good * 10)
    items = find_items(tmp_path / "m.jsonl")
    assert problems(items) == {"m.jsonl:5001": ("bad_manifest_row", "not UTF-8 (byte 0xe9 at byte 35 of the row); "
                                                                    "save the manifest as UTF-8")}
    assert [item.captions for item in items if not item.problem] == [("a cat",)]  # its 5010 rows' caption, once


def test_a_csv_row_that_is_not_utf8_is_a_bad_row_named_by_its_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbfimage,caption\na.jpg,a cat\na.jpg,\"caf\xe9\ncr\xe8me\"\n"
                                     b"a.jpg,a dog\n")
    items = find_items(tmp_path / "m.csv")
    assert problems(items) == {"m.csv:3": ("bad_manifest_row", "not UTF-8 (byte 0xe9 at byte 4 of the field); "
                                                               "save the manifest as UTF-8")}
    assert [item.captions for item in items if not item.problem] == [("a cat", "a dog")]
