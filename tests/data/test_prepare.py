"""`prepare`: good inputs kept exactly, each kind of bad input skipped with its reason, manifests, reruns."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from megadalle.cli import main
from megadalle.config.data import PrepareConfig
from megadalle.data.prepare import prepare
from megadalle.data.shards import ShardIndex, iter_samples
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import config, put


def solid_png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def mixed_folder(tmp_path):
    """Five good images and one bad input of each kind; returns (folder, {source: reason or None})."""
    root = tmp_path / "in"
    put(root, "a/cat.jpg", jpeg_bytes((80, 60), 1), "a cat\n\n a small cat \n")
    put(root, "b/dog.png", jpeg_bytes((70, 70), 2, "PNG", "RGBA"), "a dog")
    put(root, "bird.webp", jpeg_bytes((64, 100), 3, "WEBP"), "a bird")
    put(root, "gray.JPG", jpeg_bytes((50, 40), 4, "JPEG", "L"), "grey")
    put(root, "sub/deeper/pal.png", jpeg_bytes((40, 40), 5, "PNG", "P"), "palette")
    good = jpeg_bytes((64, 64), 6)
    put(root, "empty.jpg", b"")
    put(root, "trunc.jpg", good[: len(good) // 2])
    put(root, "fake.png", b"this is plain text, not a PNG")
    put(root, "tiny.jpg", jpeg_bytes((16, 16), 7))
    put(root, "bomb.png", solid_png((600, 500)))          # over max_pixels: PIL's warning level
    put(root, "bomb_big.png", solid_png((1000, 1000)))    # over 2 x max_pixels: PIL's error level
    put(root, "nocap.jpg", good, caption=None)
    put(root, "blank.jpg", good, caption="  \n\n")
    put(root, "badenc.jpg", good, caption=b"\xff\xfe\xfa caption")
    (root / "orphan.txt").write_text("a caption without an image")
    expected = {"a/cat.jpg": None, "b/dog.png": None, "bird.webp": None, "gray.JPG": None, "sub/deeper/pal.png": None,
                "empty.jpg": "empty_file", "trunc.jpg": "truncated", "fake.png": "not_an_image",
                "tiny.jpg": "too_small", "bomb.png": "decompression_bomb", "bomb_big.png": "decompression_bomb",
                "nocap.jpg": "missing_caption", "blank.jpg": "empty_caption", "badenc.jpg": "caption_not_utf8",
                "orphan.txt": "orphan_caption"}
    return root, expected


def test_keeps_exactly_the_good_and_reports_each_bad(mixed_folder, tmp_path):
    root, expected = mixed_folder
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    kept = {s["json"]["source"]: s for s in iter_samples(tmp_path / "out", ["jpg", "txt", "json"])}
    assert set(kept) == {src for src, reason in expected.items() if reason is None}
    for s in kept.values():
        assert s["jpg"].size == (32, 32) and s["jpg"].mode == "RGB"
    assert kept["a/cat.jpg"]["txt"] == "a cat\na small cat"
    assert kept["a/cat.jpg"]["json"]["width"] == 80 and kept["a/cat.jpg"]["json"]["captions"] == 2
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert {b["source"]: b["reason"] for b in report["bad"]} == {s: r for s, r in expected.items() if r}
    assert report["kept"] == summary.kept == 5
    assert report["skipped"] == {"caption_not_utf8": 1, "decompression_bomb": 2, "empty_caption": 1, "empty_file": 1,
                                 "missing_caption": 1, "not_an_image": 1, "orphan_caption": 1, "too_small": 1,
                                 "truncated": 1}
    assert "kept 5 samples" in summary.text()
    assert "skipped      1  caption_not_utf8: caption files are read as UTF-8 text; convert them" in summary.text()
    assert "skipped      2  decompression_bomb: more than max_pixels=200000 pixels; set a higher max_pixels to keep " \
        "them" in summary.text()
    assert {b["source"]: b["detail"] for b in report["bad"] if b["reason"] == "decompression_bomb"} == {
        "bomb.png": "600x500 = 300000 pixels > max_pixels=200000",  # PIL's words were of a DOS attack
        "bomb_big.png": "1000x1000 = 1000000 pixels > max_pixels=200000"}


def test_white_background_for_transparency(tmp_path):
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    put(tmp_path / "in", "clear.png", buf.getvalue())
    prepare(config(tmp_path / "in", tmp_path / "out", format="png"), progress=False)
    (sample,) = iter_samples(tmp_path / "out", ["png"])
    assert np.asarray(sample["png"]).min() == 255


def test_worker_count_does_not_change_output_and_rerun_is_safe(mixed_folder, tmp_path):
    root, _ = mixed_folder
    prepare(config(root, tmp_path / "w0", shard_max_samples=2), progress=False)
    prepare(config(root, tmp_path / "w2", shard_max_samples=2, num_workers=2), progress=False)
    names = sorted(p.name for p in (tmp_path / "w0").glob("*.tar"))
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for name in names:
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    prepare(config(root, tmp_path / "w0", shard_max_samples=10), progress=False)  # rerun, fewer shards
    assert sorted(p.name for p in (tmp_path / "w0").glob("*")) == [".lock", "index.json", "report.json",
                                                                 "shard-000000.tar", "shard-000000.tar.idx"]
    assert ShardIndex.load(tmp_path / "w0").total == 5


def test_jsonl_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img/one.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "img/two.png").write_bytes(jpeg_bytes((40, 50), 2, "PNG"))
    (tmp_path / "img/three.jpg").write_bytes(jpeg_bytes((40, 40), 3))
    rows = [json.dumps({"image": "img/one.jpg", "caption": "first"}),
            json.dumps({"image": "img/two.png", "caption": ["second", "another"]}),
            json.dumps({"image": "img/missing.jpg", "caption": "gone"}),
            "{not json",
            json.dumps({"image": "img/three.jpg", "caption": ""}),
            json.dumps({"image": "img/one.jpg", "caption": "first again"})]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    summary = prepare(config(tmp_path / "m.jsonl", tmp_path / "out"), progress=False)
    assert [s["txt"] for s in iter_samples(tmp_path / "out", ["txt"])] == ["first\nfirst again", "second\nanother"]
    assert summary.skipped == {"bad_manifest_row": 1, "empty_caption": 1, "missing_file": 1}


def test_csv_manifest_with_custom_columns(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.csv").write_text('path,text\na.jpg,"line one\nline two"\nnone.jpg,lost\n')
    summary = prepare(config(tmp_path / "m.csv", tmp_path / "out", image_column="path", caption_column="text"),
                      progress=False)
    assert [s["txt"] for s in iter_samples(tmp_path / "out", ["txt"])] == ["line one line two"]  # one caption
    assert summary.skipped == {"missing_file": 1}
    with pytest.raises(ValueError, match="no column 'image'"):
        prepare(config(tmp_path / "m.csv", tmp_path / "out2"), progress=False)


def test_cli_verb(mixed_folder, tmp_path, capsys):
    root, _ = mixed_folder
    out = tmp_path / "cli"
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=24", "min_side=32",
                 "max_pixels=200000", "num_workers=0", "format=png"]) == 0
    assert ShardIndex.load(out).meta["image_size"] == 24
    assert "kept 5 samples" in capsys.readouterr().out
    assert main(["prepare", f"input={root}", f"output={out}", "format=gif"]) == 2


def test_nothing_usable_is_one_line_exit_code_2_naming_the_report_and_writes_no_index(tmp_path, capsys):
    """It was the summary plus a line on stdout and exit code 1, unlike every other problem."""
    put(tmp_path / "in", "x.jpg", b"")
    argv = ["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "num_workers=0"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "skipped      1  empty_file" in out
    assert err.splitlines()[-1] == (f"megadalle prepare: input='{tmp_path / 'in'}': no usable input, every one "
                                    f"skipped (1 empty_file); the summary above says why, "
                                    f"{tmp_path / 'out/report.json'} lists each; no index.json written")
    assert "Traceback" not in err
    assert not (tmp_path / "out/index.json").exists()
    assert json.loads((tmp_path / "out/report.json").read_text())["skipped"] == {"empty_file": 1}
    put(tmp_path / "in", "x.jpg", jpeg_bytes((64, 64), 1))
    assert main(argv) == 0 and ShardIndex.load(tmp_path / "out").total == 1  # the report left in the way of nothing


def test_an_output_whose_every_sample_went_to_validation_is_refused_naming_val_fraction(tmp_path, capsys):
    """prepare exited 0 with val/ alone; the next verb called the output unfinished and `index` found no shards."""
    for i in range(3):
        put(tmp_path / "in", f"x{i}.jpg", jpeg_bytes((64, 64), i))
    argv = ["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "num_workers=0", "val_fraction=0.999"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"megadalle prepare: output='{tmp_path / 'out'}': every one of the 3 samples kept is a validation sample "
        "(val_fraction=0.999, and a sample's side is set by its image's bytes), so no training shard was written: "
        "lower val_fraction or give more data")
    assert main([*argv[:-1], "val_fraction=0.001"]) == 0 and ShardIndex.load(tmp_path / "out").total == 3
    assert "val_fraction=0.001 held out none of the 3 samples" in capsys.readouterr().err  # no split, said at once


@pytest.mark.parametrize("empty, why", [("folder", "an empty folder"), ("m.jsonl", "a manifest without rows"),
                                        ("m.csv", "a manifest without rows")])
def test_an_input_holding_nothing_is_refused_before_any_output_is_made(tmp_path, capsys, empty, why):
    (tmp_path / "folder/sub").mkdir(parents=True)
    (tmp_path / "m.jsonl").write_text("\n\n")
    (tmp_path / "m.csv").write_text("image,caption\n")
    assert main(["prepare", f"input={tmp_path / empty}", f"output={tmp_path / 'out'}"]) == 2
    assert capsys.readouterr().err.startswith(f"megadalle prepare: input='{tmp_path / empty}': {why}")
    assert not (tmp_path / "out").exists()


def test_too_small_skips_name_min_side_and_what_to_set(tmp_path, capsys):
    """32 px images at image_size=32 were all skipped as too_small with no word of min_side=64, the default."""
    for i in range(3):
        put(tmp_path / "in", f"{i}.jpg", jpeg_bytes((32, 40), i))
    argv = ["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "image_size=32", "num_workers=0"]
    assert main(argv) == 2
    note = "short side below min_side=64; min_side=64 is above image_size=32: set min_side=32 to keep images of " \
           "32 px and up"
    assert f"  skipped      3  too_small: {note}\n" in capsys.readouterr().out
    assert json.loads((tmp_path / "out/report.json").read_text())["notes"] == {"too_small": note}
    assert main([*argv, "min_side=32"]) == 0
    assert "kept 3 samples" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", ["{input}/", "{input}/.", "{input}/../in", "{input}/shards", "{parent}"])
def test_an_output_that_is_the_input_or_holds_it_is_refused(mixed_folder, tmp_path, spelling, capsys, monkeypatch):
    from megadalle.config import ConfigError

    root, _ = mixed_folder
    output = spelling.format(input=root, parent=tmp_path)
    with pytest.raises(ConfigError, match="output=.*input=") as err:
        config(root, output).validate()
    assert str(root) in str(err.value)
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "input=./in", "output=in/", "num_workers=0"]) == 2
    assert "output='in/'" in capsys.readouterr().err
    assert not list(root.rglob("*.tar")) and not (root / "report.json").exists()


def test_an_output_beside_the_input_or_beside_a_manifest_is_fine(tmp_path):
    config(tmp_path / "in", tmp_path / "in-shards").validate()
    config(tmp_path / "data/m.csv", tmp_path / "data/shards").validate()
    with pytest.raises(ValueError, match="manifest"):
        config(tmp_path / "data/m.csv", tmp_path / "data/m.csv").validate()


def test_ctrl_c_is_one_line_and_exit_code_130(mixed_folder, tmp_path, capsys, monkeypatch):
    from megadalle.data import prepare as prepare_module

    root, _ = mixed_folder
    real, calls = prepare_module.convert, []

    def interrupted(item, opts):
        calls.append(item)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(item, opts)

    monkeypatch.setattr(prepare_module, "convert", interrupted)
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "num_workers=0"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("megadalle prepare: interrupted; rerun")
    assert not (tmp_path / "out/index.json").exists() and not list((tmp_path / "out").glob("*.tar"))


def test_help_names_every_kind_of_input(capsys):
    assert main(["prepare", "--help"]) == 0
    doc = capsys.readouterr().out.split("\ninput:", 1)[1].split("\noutput:", 1)[0]
    assert ".tar shards" in " ".join(doc.split())


def test_an_exif_rotated_photo_records_its_upright_size(tmp_path):
    """A phone's portrait photo is stored landscape with EXIF orientation 6: its json said 120x64, the shown size
    is 64x120 (the pixels were already turned upright)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to show
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 120, 3), dtype=np.uint8)).save(
        buf, "JPEG", exif=exif)
    put(tmp_path / "in", "portrait.jpg", buf.getvalue())
    assert prepare(config(tmp_path / "in", tmp_path / "out"), progress=False).kept == 1
    meta = next(iter_samples(tmp_path / "out", ["json"]))["json"]
    assert (meta["width"], meta["height"]) == (64, 120)


def test_a_panorama_is_counted_as_heavily_cropped_or_skipped_by_max_aspect(tmp_path, capsys):
    """A 400x30 panorama keeps its middle 7.5% under the caption for the whole scene: the summary says how many
    kept images lost more than half their area, naming max_aspect; max_aspect skips them as extreme_aspect."""
    put(tmp_path / "in", "wide.jpg", jpeg_bytes((400, 32), 1))
    put(tmp_path / "in", "tall.jpg", jpeg_bytes((32, 90), 2))
    put(tmp_path / "in", "square.jpg", jpeg_bytes((48, 40), 3))
    argv = ["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=32",
            "num_workers=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "kept 3 samples" in out
    assert "  kept         2  centre-cropped to under half their area (long side over 2x the short); " \
           "max_aspect=null (set max_aspect=2 to skip them as extreme_aspect)\n" in out
    assert json.loads((tmp_path / "out/report.json").read_text())["heavy_crops"] == 2
    assert main([*argv, "max_aspect=3"]) == 0
    out = capsys.readouterr().out
    assert "kept 2 samples" in out and "  kept         1  centre-cropped" in out
    note = "long side over max_aspect=3.0 times the short side; set a higher max_aspect (or null) to keep them, " \
           "centre-cropped to a square"
    assert f"  skipped      1  extreme_aspect: {note}\n" in out
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["bad"][0]["source"] == "wide.jpg" and report["notes"] == {"extreme_aspect": note}


def test_max_aspect_below_one_is_refused(tmp_path):
    with pytest.raises(Exception, match="max_aspect"):
        PrepareConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), max_aspect=0.5).validate()


def test_images_below_image_size_are_counted_as_upscaled_or_skipped_by_min_side(tmp_path, capsys):
    """A 40x40 thumbnail enlarged to 64 px is a blurry target: the summary counts the kept images smaller than
    image_size, naming min_side; min_side=image_size skips them as too_small."""
    put(tmp_path / "in", "thumb.jpg", jpeg_bytes((40, 40), 1))
    put(tmp_path / "in", "a.jpg", jpeg_bytes((64, 64), 2))
    put(tmp_path / "in", "b.jpg", jpeg_bytes((80, 64), 3))
    argv = ["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "image_size=64", "min_side=32",
            "num_workers=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "kept 3 samples" in out
    assert "  kept         1  upscaled to image_size=64 (short side below it, which adds no detail); min_side=32 " \
           "(set min_side=64 to skip them as too_small)\n" in out
    assert json.loads((tmp_path / "out/report.json").read_text())["upscaled"] == 1
    assert main([*argv, "min_side=64"]) == 0
    out = capsys.readouterr().out
    assert "kept 2 samples" in out and "kept         1  upscaled" not in out and "  skipped      1  too_small" in out
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["upscaled"] == 0 and report["bad"][0]["source"] == "thumb.jpg"


def test_a_report_path_that_would_replace_data_is_refused_before_any_work(tmp_path, capsys):
    """report= replaced whatever it named, in silence: an input photo, the output's index.json, a tokenizer."""
    root = tmp_path / "in"
    put(root, "a.jpg", jpeg_bytes((40, 40), 1), "a cat")
    (tmp_path / "tok.model").write_bytes(b"a tokenizer")
    base = ["prepare", f"input={root}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=8", "num_workers=0"]
    for report, why in ((root / "a.jpg", "inside input="), (tmp_path / "out" / "index.json", "a name the shards'"),
                        (tmp_path / "tok.model", "an existing file that is no report"), (tmp_path, "a folder")):
        assert main([*base, f"report={report}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"megadalle prepare: report={report}: {why}") and err.count("\n") == 1, err
    assert (root / "a.jpg").read_bytes() == jpeg_bytes((40, 40), 1) and not (tmp_path / "out").exists()
    assert main([*base, f"report={tmp_path / 'r.json'}"]) == 0
    assert main([*base, f"report={tmp_path / 'r.json'}"]) == 0  # an earlier report is replaced
    assert main(["index", f"dir={tmp_path / 'out'}", f"report={tmp_path / 'out' / 'shard-000000.tar'}"]) == 2
    assert "a name the shards' own files have" in capsys.readouterr().err


def test_images_sharing_one_caption_file_are_kept_and_counted(tmp_path, capsys):
    """d.jpg and d.png beside one d.txt (a converted copy left beside its original) were both kept with d.txt's
    caption, the same picture trained on twice, and nothing said so."""
    put(tmp_path / "in", "d.jpg", jpeg_bytes((64, 64), 1), "a red square")
    put(tmp_path / "in", "d.png", png_bytes((64, 64)), None)
    put(tmp_path / "in", "e.jpg", jpeg_bytes((64, 64), 2), "a blue circle")
    assert main(["prepare", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "image_size=64",
                 "num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert "kept 3 samples" in out
    assert "  kept         2  images sharing a caption file with another image of their name (e.g. d.jpg and d.png " \
           "both read d.txt): each is trained on with it" in out
    assert json.loads((tmp_path / "out/report.json").read_text())["shared_captions"] == 2


def png_bytes(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "green").save(buf, "PNG")
    return buf.getvalue()
