"""A folder holding both `X.txt` and `X.TXT` beside `X.jpg` (a case-sensitive filesystem allows it): the exact
suffix is the caption and the other file is reported as an orphan caption, as `folder_items` says; a lone `X.TXT`
is still found (tests/data/test_sources.py)."""
from __future__ import annotations

import json

import pytest

from megadalle.data.convert import Skip, read_captions
from megadalle.data.prepare import prepare
from megadalle.data.shards import iter_samples
from megadalle.data.sources import find_items
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import config, put


def both_cases(root):
    """`X.jpg` with `X.txt` ("lower case suffix") and `X.TXT` ("upper case suffix") beside it."""
    put(root, "X.jpg", jpeg_bytes((40, 40), 1), caption="lower case suffix")
    (root / "X.TXT").write_text("upper case suffix")
    if len(list(root.iterdir())) != 3:
        pytest.skip("a case-insensitive filesystem: X.TXT is X.txt")


def test_the_exact_txt_is_the_caption_and_the_upper_case_one_an_orphan(tmp_path):
    """Sorted by name `X.TXT` comes first, so only the preference for the exact suffix makes `X.txt` the caption."""
    both_cases(tmp_path)
    image, orphan = find_items(tmp_path)
    assert image.source == "X.jpg" and image.caption_file == tmp_path / "X.txt"
    assert read_captions(image) == ("lower case suffix",)
    assert (orphan.source, orphan.problem) == ("X.TXT", ("orphan_caption", "X.jpg's caption is X.txt; this one is "
                                                                           "not read"))  # not "no image named X"


def test_a_caption_that_is_a_folder_is_named_as_one(tmp_path):
    put(tmp_path, "cd.jpg", jpeg_bytes((40, 40), 1), caption=None)
    (tmp_path / "cd.txt").mkdir()
    (image,) = find_items(tmp_path)
    with pytest.raises(Skip) as skipped:
        read_captions(image)
    assert (skipped.value.reason, skipped.value.detail) == ("missing_caption", "cd.txt beside the image is a folder")


def test_prepare_keeps_the_exact_txt_and_reports_the_other_as_an_orphan_caption(tmp_path):
    both_cases(tmp_path / "in")
    summary = prepare(config(tmp_path / "in", tmp_path / "out"), progress=False)
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert summary.kept == 1
    assert report["skipped"] == {"orphan_caption": 1}
    assert {b["source"]: b["reason"] for b in report["bad"]} == {"X.TXT": "orphan_caption"}
    assert [s["txt"] for s in iter_samples(tmp_path / "out", ["txt"])] == ["lower case suffix"]
