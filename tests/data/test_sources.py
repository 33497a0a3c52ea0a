"""What `prepare` reads: folders (which files count, captions found whatever their suffix's case),
manifests (one string is one caption; malformed rows refused with a reason), byte-order marks,
and inputs that cannot be read as a whole (one-line user errors, never tracebacks)."""
from __future__ import annotations

import json
import re

import pytest

from megadalle.cli import main
from megadalle.data.convert import read_captions
from megadalle.data.prepare import prepare
from megadalle.data.shards import iter_samples
from megadalle.data.sources import InputError, find_items
from megadalle.errors import UserError
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import config, put


def problems(items):
    return {item.source: item.problem[0] for item in items if item.problem}


def test_a_folder_with_loose_images_and_tars_is_refused_not_read_as_shards(tmp_path):
    root = tmp_path / "in"
    put(root, "a.jpg", jpeg_bytes((40, 40), 1))
    put(root, "sub/b.jpg", jpeg_bytes((40, 40), 2))
    (root / "backup.tar").write_bytes(b"\0" * 1024)
    with pytest.raises(InputError, match=r"2 images and 1 \*\.tar") as err:
        find_items(root)
    assert isinstance(err.value, UserError) and "backup.tar" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == ["a.jpg", "a.txt", "backup.tar", "sub"]  # nothing written


def test_gif_bmp_and_tiff_are_images_and_a_gif_gives_its_first_frame(tmp_path):
    from PIL import Image

    root = tmp_path / "in"
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(root.mkdir() or root / "anim.gif", save_all=True, append_images=frames[1:])
    (root / "anim.txt").write_text("animated")
    for name, fmt in (("b.bmp", "BMP"), ("c.tif", "TIFF"), ("d.TIFF", "TIFF")):
        put(root, name, jpeg_bytes((40, 40), 3, fmt), name)
    summary = prepare(config(root, tmp_path / "out", format="png"), progress=False)
    assert summary.kept == 4 and not summary.skipped
    gif = next(s for s in iter_samples(tmp_path / "out", ["png", "txt"]) if s["txt"] == "animated")
    r, g, b = gif["png"].getpixel((16, 16))
    assert r > 200 and b < 50


def test_jfif_jpe_and_avif_files_are_images_not_unrecognised(tmp_path):
    """Browsers save JPEGs as `.jfif`, some cameras as `.jpe`, phones and the web serve `.avif`: PIL reads them all."""
    from PIL import features

    root = tmp_path / "in"
    put(root, "pic.jfif", jpeg_bytes((40, 40), 1), "one")
    put(root, "cam.JPE", jpeg_bytes((40, 40), 2), "two")
    expected = 2
    if features.check("avif"):
        put(root, "web.avif", jpeg_bytes((40, 40), 3, "AVIF"), "three")
        expected = 3
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    assert summary.kept == expected and not summary.skipped


def test_a_caption_is_found_whatever_the_case_of_its_suffix(tmp_path):
    root = tmp_path / "in"
    put(root, "X.jpg", jpeg_bytes((40, 40), 1), caption=None)
    (root / "X.TXT").write_text("upper case suffix")
    (item,) = find_items(root)
    assert read_captions(item) == ("upper case suffix",)


def test_unrecognised_files_and_orphan_captions_are_counted_by_reason(tmp_path):
    root = tmp_path / "in"
    put(root, "a.jpg", jpeg_bytes((40, 40), 1))
    (root / "notes.md").write_text("# my data")
    (root / "sub").mkdir()
    (root / "sub/orphan.txt").write_text("a caption without an image")
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert summary.kept == 1
    assert report["skipped"] == {"orphan_caption": 1, "unrecognised_file": 1}
    assert {b["source"]: b["reason"] for b in report["bad"]} == {"notes.md": "unrecognised_file",
                                                                 "sub/orphan.txt": "orphan_caption"}
    assert [s["__key__"] for s in iter_samples(tmp_path / "out", ["txt"])] == ["000000000"]  # keys as before


def test_a_heic_photo_is_named_with_how_to_convert_it(tmp_path, capsys):
    """An iPhone's HEIC photos were "neither an image nor a .txt caption", their captions orphans, with no word of
    what to do."""
    root = tmp_path / "in"
    put(root, "a.jpg", jpeg_bytes((40, 40), 1))
    put(root, "IMG_0001.HEIC", b"\0\0\0\x18ftypheic")
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=32",
                 "num_workers=0"]) == 0
    assert "unrecognised_file: 1 of them HEIC photos, which PIL does not read: convert them to JPEG (the report " \
           "names them)" in capsys.readouterr().out
    report = json.loads((tmp_path / "out/report.json").read_text())
    (heic,) = [bad for bad in report["bad"] if bad["reason"] == "unrecognised_file"]
    assert heic["source"] == "IMG_0001.HEIC" and "convert it to JPEG" in heic["detail"]


def test_a_csv_caption_spanning_lines_is_one_caption(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.csv").write_text('image,caption\na.jpg,"a red car\non a hill"\n')
    (item,) = find_items(tmp_path / "m.csv")
    assert item.captions == ("a red car on a hill",)
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": ["one\ntwo", "three"]}) + "\n")
    (item,) = find_items(tmp_path / "m.jsonl")
    assert item.captions == ("one two", "three")


@pytest.mark.parametrize("caption", [{"en": "a cat"}, 42, 1.5, True, ["ok", {"x": 1}]])
def test_a_jsonl_caption_that_is_not_text_is_a_bad_row(tmp_path, caption):
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": caption}) + "\n")
    (item,) = find_items(tmp_path / "m.jsonl")
    assert item.problem[0] == "bad_manifest_row" and "caption" in item.problem[1]


@pytest.mark.parametrize("named, key", [({"image": "image", "caption": "text"}, "caption_column"),
                                        ({"image": "path", "caption": "caption"}, "image_column")])
def test_a_jsonl_field_no_row_has_is_one_line_naming_the_rows_fields(tmp_path, capsys, named, key):
    """Rows `{"image", "text"}` were all skipped as blank captions, with no word of caption_column."""
    rows = [{named["image"]: f"{i}.jpg", named["caption"]: f"cap {i}", "url": "http://x"} for i in range(3)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    missing = "caption" if key == "caption_column" else "image"
    fields = list(rows[0])
    with pytest.raises(InputError, match=re.escape(f"no row has a field '{missing}' (fields: {fields}); set {key}=")):
        find_items(tmp_path / "m.jsonl")
    assert main(["prepare", f"input={tmp_path / 'm.jsonl'}", f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"set {key}=" in err and not (tmp_path / "out").exists()
    assert len(find_items(tmp_path / "m.jsonl", **{key: named[missing]})) == 3


def test_a_jsonl_row_without_the_image_or_caption_field_names_the_rows_fields(tmp_path):
    """Not `set image_column=`: the other rows have the field, and that would break them (the advice comes when no
    row has it). A row without the caption field is no blank caption (it was counted as one): its caption is
    under another name."""
    (tmp_path / "m.jsonl").write_text('{"image": "a.jpg", "caption": "x"}\n{"path": "b.jpg", "caption": "y"}\n[1]\n'
                                      '{"image": "c.jpg", "text": "z"}\n{"image": "d.jpg", "caption": null}\n')
    items = find_items(tmp_path / "m.jsonl")
    assert [item.problem for item in items[1:4]] == [
        ("bad_manifest_row", "no 'image' field (fields: ['path', 'caption'])"),
        ("bad_manifest_row", "not a JSON object"),
        ("bad_manifest_row", "no 'caption' field (fields: ['image', 'text'])")]
    assert items[4].problem is None and items[4].captions == ()  # a null caption is a blank one, read as such


def test_a_csv_row_with_more_or_fewer_fields_than_the_header_is_a_bad_row(tmp_path):
    (tmp_path / "m.csv").write_text("image,caption\na.jpg,a cat, sitting\nb.jpg\nc.jpg,fine\n\n")
    items = find_items(tmp_path / "m.csv")
    assert [item.problem for item in items[:2]] == [
        ("bad_manifest_row", "3 fields, header has 2; quote captions containing commas"),
        ("bad_manifest_row", "1 fields, header has 2; quote captions containing commas")]
    assert [item.source for item in items] == ["m.csv:2", "m.csv:3", "m.csv:4:c.jpg"]
    assert items[2].captions == ("fine",)


@pytest.mark.parametrize("text, line, why", [
    ('image,caption\na.jpg,"an open quote\nb.jpg,b\nc.jpg,c\n', 2, "unexpected end of data"),
    ('image,caption\na.jpg,"two\nlines"\nb.jpg,"quoted" then more\nc.jpg,c\n', 4, "',' expected after '\"'"),
])
def test_a_csv_quote_that_does_not_close_names_its_rows_line(tmp_path, text, line, why):
    """A caption that opened a quote took every row after it into itself, up to the next stray quote or the end:
    "kept 1, skipped 0" and a caption of four rows. No row after it can be told apart: the manifest is refused."""
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=re.escape(f"not a readable .csv file (the row from line {line} on: {why}; "
                                                   "a caption that starts with a quote must end with one")):
        find_items(tmp_path / "m.csv")


def test_a_csv_caption_longer_than_pythons_field_limit_is_read(tmp_path):
    """Python's csv refused a field over 128 KiB, and the whole manifest with it."""
    (tmp_path / "m.csv").write_text(f"image,caption\na.jpg,{'x' * 200_000}\nb.jpg,fine\n")
    assert [len(item.captions[0]) for item in find_items(tmp_path / "m.csv")] == [200_000, 4]


def test_hidden_files_and_folders_are_left_out_and_counted(tmp_path):
    """A Mac's `._IMG_1.jpg` + `._IMG_1.txt` twins were paired as an image with a caption (caption_not_utf8, with
    advice to re-encode captions that were fine), and images deleted into `.Trash-1000/` were trained on."""
    root = tmp_path / "in"
    put(root, "IMG_1.jpg", jpeg_bytes((40, 40), 1), "a cat")
    put(root, "._IMG_1.jpg", b"\x00\x05\x16\x07Mac OS X        ", b"\x00\x05\x16\x07\xff binary")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    put(root, ".Trash-1000/files/deleted.jpg", jpeg_bytes((40, 40), 2), "deleted")
    summary = prepare(config(root, tmp_path / "out", min_side=8), progress=False)
    assert summary.kept == 1 and summary.skipped == {"hidden": 4}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(b["source"] for b in report["bad"]) == [".DS_Store", ".Trash-1000", "._IMG_1.jpg", "._IMG_1.txt"]
    assert "skipped      4  hidden: files and folders whose names start with '.'" in summary.text()


def test_a_name_in_another_unicode_form_still_pairs_and_is_found(tmp_path):
    """A Mac writes `café.jpg` decomposed, a script its caption and manifest composed: missing_caption beside an
    orphan_caption, and a manifest's missing_file, all printed alike."""
    import unicodedata

    decomposed, composed = (unicodedata.normalize(form, "café") for form in ("NFD", "NFC"))
    root = tmp_path / "in"
    put(root, f"{decomposed}.jpg", jpeg_bytes((40, 40), 1), caption=None)
    (root / f"{composed}.txt").write_text("a coffee")
    (item,) = find_items(root)
    assert read_captions(item) == ("a coffee",)
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": f"in/{composed}.jpg", "caption": "a cup"}) + "\n")
    (item,) = find_items(tmp_path / "m.jsonl")
    assert item.problem is None and item.image.name == f"{decomposed}.jpg"


def test_byte_order_marks_are_not_part_of_the_data(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.csv").write_bytes("\ufeffimage,caption\na.jpg,excel\n".encode())
    (item,) = find_items(tmp_path / "m.csv")
    assert item.captions == ("excel",)
    (tmp_path / "m.jsonl").write_bytes(("\ufeff" + json.dumps({"image": "a.jpg", "caption": "first"}) + "\n").encode())
    (item,) = find_items(tmp_path / "m.jsonl")
    assert item.captions == ("first",)
    root = tmp_path / "in"
    put(root, "b.jpg", jpeg_bytes((40, 40), 2), caption="\ufeffnotepad".encode())
    (item,) = find_items(root)
    assert read_captions(item) == ("notepad",)


@pytest.mark.parametrize("sign, named", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_separated_otherwise_is_told_how_to_save_it(tmp_path, sign, named):
    """A spreadsheet saved where `;` separates (or a TSV named .csv) read as one column, and was told to set
    image_column= to a column it does not have."""
    (tmp_path / "m.csv").write_text(f"image{sign}caption\na.jpg{sign}x\n")
    with pytest.raises(InputError, match=f"its columns are separated by {named}, and prepare reads commas: save it "
                                         r"as comma-separated CSV \(or as .jsonl\)$"):
        find_items(tmp_path / "m.csv")


def test_an_input_that_cannot_be_read_is_one_line_not_a_traceback(tmp_path, capsys):
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "m.csv").write_text("image,caption\na.jpg,x\n")
    with pytest.raises(InputError, match=r"\.json.*\.jsonl"):
        find_items(tmp_path / "list.json")
    with pytest.raises(InputError, match="does not exist"):
        find_items(tmp_path / "nothing")
    with pytest.raises(InputError, match="no column 'text'.*caption_column"):
        find_items(tmp_path / "m.csv", caption_column="text")
    assert main(["prepare", f"input={tmp_path / 'list.json'}", f"output={tmp_path / 'out'}"]) == 2
    assert main(["prepare", f"input={tmp_path / 'm.csv'}", f"output={tmp_path / 'out'}", "caption_column=text"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_a_linked_subfolder_is_read_once_and_a_link_back_up_does_not_loop(tmp_path):
    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    put(root, "a.jpg", jpeg_bytes((40, 40), 1), "in the folder")
    put(elsewhere, "batch2/b.jpg", jpeg_bytes((40, 40), 2), "linked in")
    (root / "batch2").symlink_to(elsewhere / "batch2", target_is_directory=True)
    (root / "same").symlink_to(elsewhere / "batch2", target_is_directory=True)  # a second way to the same folder
    (elsewhere / "batch2/up").symlink_to(root, target_is_directory=True)  # a loop
    assert [item.source for item in find_items(root)] == ["a.jpg", "batch2/b.jpg"]
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    assert summary.kept == 2 and not summary.skipped
    assert sorted(s["txt"] for s in iter_samples(tmp_path / "out", ["txt"])) == ["in the folder", "linked in"]
