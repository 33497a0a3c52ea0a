"""Inputs `convert` reads as the user means them: a PNG cut short is truncated (not unreadable), a shard caption's
byte-order mark is no text, a manifest's URL is named as one."""
from __future__ import annotations

import io
import struct
import tarfile

from PIL import Image

from megadalle.cli import main
from megadalle.data.captions import caption_lines
from megadalle.data.convert import ConvertOptions, convert
from megadalle.data.sources import find_items
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import put

OPTS = ConvertOptions(image_size=32, min_side=1)


def test_half_a_png_is_counted_truncated(tmp_path):
    """A PNG's EXIF may follow its pixels, so reading the upright size read it to its end, outside the decode's try."""
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    put(tmp_path, "p.png", buf.getvalue()[:len(buf.getvalue()) // 2])
    [item] = find_items(tmp_path)
    assert convert(item, OPTS).reason == "truncated"


def test_a_byte_order_mark_is_no_caption_text():
    assert caption_lines("\ufeffbom in tar\nsecond") == ["bom in tar", "second"]


def test_a_shard_caption_keeps_no_byte_order_mark(tmp_path):
    root = tmp_path / "tars"
    root.mkdir()
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in (("k1.jpg", jpeg_bytes((40, 40), 1)), ("k1.txt", "\ufeffbom in tar".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    [item] = find_items(root)
    assert convert(item, OPTS).sample["txt"] == "bom in tar"


def test_a_manifest_url_is_named_as_one(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"image": "http://example.com/x.jpg", "caption": "a cat"}\n')
    [item] = find_items(tmp_path / "m.jsonl")
    result = convert(item, OPTS)
    assert (result.reason, result.source) == ("missing_file", "m.jsonl:1")
    assert result.detail.startswith('"http://example.com/x.jpg" is a URL: prepare reads local files only; download')


def test_a_manifest_file_url_is_the_local_file_it_names(tmp_path):
    """`file:///data/a.jpg`, as some tools write local paths, was skipped as a URL to download."""
    put(tmp_path, "a b.jpg", jpeg_bytes((40, 40), 1))
    put(tmp_path, "c.jpg", jpeg_bytes((40, 40), 2))
    rows = [f"file://{tmp_path}/a%20b.jpg", f"file://localhost{tmp_path}/c.jpg", "file://otherhost/x.jpg"]
    (tmp_path / "m.jsonl").write_text("".join(f'{{"image": "{row}", "caption": "a cat"}}\n' for row in rows))
    first, second, remote = find_items(tmp_path / "m.jsonl")
    assert (first.image, second.image) == (tmp_path / "a b.jpg", tmp_path / "c.jpg")
    assert all(convert(item, OPTS).sample is not None for item in (first, second))
    assert remote.problem[0] == "missing_file" and "is a URL" in remote.problem[1]


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF names a tag's data 1000 bytes into an EXIF block of 26: PIL warns and skips the tag."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 2, 100, 1000) + struct.pack("<I", 0)  # Make, ASCII
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "JPEG", exif=b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd)
    return buf.getvalue()


def test_a_decoders_warning_is_kept_with_its_input_and_said_with_its_file(tmp_path, capsys):
    """PIL's warnings came from prepare's workers naming no file ("Tag data larger than file. Skipping tag 271")."""
    put(tmp_path / "in", "odd.jpg", corrupt_exif_jpeg())
    [item] = find_items(tmp_path / "in")
    result = convert(item, OPTS)
    assert result.sample is not None and result.warnings == ("Tag data larger than file. Skipping tag 271",)
    assert main(["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=8",
                 "num_workers=2"]) == 0
    err = capsys.readouterr().err
    assert f"[prepare] warning: {item.source}: Tag data larger than file. Skipping tag 271\n" in err
    assert err.count("Skipping tag 271") == 1
