"""`convert`'s decisions at their edges, each against a hand-made input: which image is kept or skipped at exactly a
limit, what the skip says, what the kept sample records, and how its JPEG is written."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from megadalle.data import convert as convert_module
from megadalle.data.convert import ConvertOptions, convert, skip_notes
from megadalle.data.sources import find_items
from tests.data.conftest import jpeg_bytes
from tests.data.image_files import encoded
from tests.data.prepare_inputs import put


def converted(folder, data: bytes, name="p.png", caption: str | bytes = "a picture", **opts):
    """The Result of `convert` for one image file beside its caption file."""
    put(folder, name, data, caption)
    [item] = find_items(folder)
    return convert(item, ConvertOptions(**{"image_size": 32, "min_side": 1, **opts}))


def png(width: int, height: int) -> bytes:
    return encoded(Image.new("RGB", (width, height), (200, 30, 90)), "PNG")


def test_an_image_of_exactly_max_pixels_is_kept_and_one_pixel_row_more_is_a_bomb_naming_the_limit(tmp_path):
    assert converted(tmp_path / "a", png(40, 50), max_pixels=2000).reason is None  # 2000 pixels
    bomb = converted(tmp_path / "b", png(41, 50), max_pixels=2000)  # 2050 pixels
    assert bomb.reason == "decompression_bomb" and "2050 pixels" in bomb.detail and "2000" in bomb.detail


def test_a_wide_image_whose_short_side_is_below_min_side_is_too_small_naming_its_size(tmp_path):
    """The short side decides: 100 px wide but 20 high is a thumbnail strip, whatever its width."""
    result = converted(tmp_path, png(100, 20), min_side=32)
    assert (result.reason, result.detail) == ("too_small", "100x20: short side < min_side=32")


def test_an_image_of_exactly_min_side_is_kept(tmp_path):
    assert converted(tmp_path, png(40, 32), min_side=32).reason is None


def test_an_image_of_exactly_max_aspect_is_kept_and_a_wider_one_skipped(tmp_path):
    assert converted(tmp_path / "a", png(64, 32), max_aspect=2.0).reason is None
    wider = converted(tmp_path / "b", png(66, 32), max_aspect=2.0)
    assert (wider.reason, wider.detail) == ("extreme_aspect", "66x32: long side over max_aspect=2.0 times the short side")


@pytest.mark.parametrize("width, heavy", [(64, False), (65, True)])
def test_heavy_crop_means_under_half_the_area_kept(tmp_path, width, heavy):
    """64x32 keeps 32x32, exactly half its area: not under half; 65x32 keeps less than half."""
    result = converted(tmp_path, png(width, 32))
    assert result.reason is None and result.heavy_crop is heavy


def test_the_too_small_note_at_min_side_equal_to_image_size_says_only_how_to_keep_smaller_ones():
    """min_side=image_size is no setting above image_size: its note must not tell the user to set what is set."""
    note = skip_notes(ConvertOptions(image_size=32, min_side=32))["too_small"]
    assert note == ("short side below min_side=32; set a lower min_side to keep them (upscaled to image_size=32, "
                    "which adds no detail)")
    above = skip_notes(ConvertOptions(image_size=32, min_side=33))["too_small"]
    assert "min_side=33 is above image_size=32: set min_side=32" in above


def test_a_caption_file_that_is_not_utf8_is_skipped_as_such_naming_the_caption_file(tmp_path):
    result = converted(tmp_path, png(40, 40), caption=b"caf\xe9 au lait")
    assert result.reason == "caption_not_utf8" and result.detail.startswith("caption file: ")
    assert "utf-8" in result.detail


def test_the_json_records_the_source_format(tmp_path):
    """The format of the file read (PNG here), not of the shard's image (JPEG)."""
    result = converted(tmp_path, png(40, 40))
    assert result.sample["json"]["format"] == "PNG"
    assert Image.open(io.BytesIO(result.sample["jpg"])).format == "JPEG"


@pytest.mark.parametrize("quality, sampling", [(90, 0), (89, 2)])
def test_jpeg_chroma_is_kept_whole_from_quality_90(tmp_path, quality, sampling):
    """4:4:4 (PIL's sampling 0) at quality 90 and up, 4:2:0 (sampling 2) below."""
    result = converted(tmp_path, png(40, 40), quality=quality)
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(result.sample["jpg"]))) == sampling


def test_the_jpeg_is_written_at_the_quality_asked(tmp_path):
    """Its quantization tables are those PIL writes for that quality."""
    result = converted(tmp_path, png(40, 40), quality=50)
    reference = Image.open(io.BytesIO(encoded(Image.new("RGB", (32, 32)), "JPEG", quality=50, subsampling=2)))
    assert Image.open(io.BytesIO(result.sample["jpg"])).quantization == reference.quantization


def test_a_shard_sample_without_an_image_is_a_missing_file(tmp_path):
    """A sample indexing keeps for its codes has nothing `prepare` can make an image of."""
    root = tmp_path / "tars"
    root.mkdir()
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2), np.uint16))
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in (("k1.codes.npy", buf.getvalue()), ("k1.txt", b"codes only"),
                           ("k2.jpg", jpeg_bytes((40, 40), 2)), ("k2.txt", b"a photo")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    results = [convert(item, ConvertOptions(image_size=32, min_side=1)) for item in find_items(root)]
    assert [(r.reason, r.detail) for r in results] == [("missing_file", "the sample has no image field"), (None, "")]


def test_an_unforeseen_error_skips_only_that_input_as_unreadable_naming_it(tmp_path, monkeypatch):
    def fails(img, size):
        raise RuntimeError("resize broke")

    monkeypatch.setattr(convert_module, "resize_center_crop", fails)
    result = converted(tmp_path, png(40, 40))
    assert (result.reason, result.detail, result.sample) == ("unreadable", "RuntimeError: resize broke", None)
