"""Which side of the validation split a sample lands on: one image is one sample whatever the manifest's
shape, a sample's side depends on its image's bytes alone, never on what else the input holds nor on where the data
lies, how it is named or sharded, an input's own split is kept, and `<output>/val/` is replaced only when it is
megadalle's."""
from __future__ import annotations

import csv
import json
import shutil
import zlib
from pathlib import Path

import pytest
from webdataset import TarWriter

from megadalle.cli import main
from megadalle.data.prepare import prepare
from megadalle.data.shards import iter_samples
from megadalle.data.split import NAME_RULE, SPLIT_RULE, SecondSplitError, SplitDirError
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import config, put


def samples(root) -> list[dict]:
    return list(iter_samples(root, ["txt", "json"])) if (root / "index.json").exists() else []


def image_of(sample) -> str:
    return sample["txt"].split(" caption")[0]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_manifest_row_per_caption_gives_one_sample_per_image_on_one_side(tmp_path, kind):
    names = [f"img/{i:02d}.jpg" for i in range(12)]
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(jpeg_bytes((40, 40), i))
    # COCO's order: annotation after annotation, an image's five captions far apart, spelled two ways
    rows = [(("./" if c == 2 else "") + name, f"{name} caption {c}") for c in range(5) for name in names]
    manifest = tmp_path / f"m.{kind}"
    with open(manifest, "w", newline="") as f:
        if kind == "csv":
            csv.writer(f).writerows([("image", "caption"), *rows])
        else:
            f.writelines(json.dumps({"image": image, "caption": caption}) + "\n" for image, caption in rows)
    out = tmp_path / "out"
    summary = prepare(config(manifest, out, val_fraction=0.5), progress=False)
    train, val = samples(out), samples(out / "val")
    assert summary.kept == len(train) + len(val) == 12 and train and val
    assert not {image_of(s) for s in train} & {image_of(s) for s in val}
    for s in train + val:
        assert s["txt"].split("\n") == [f"{image_of(s)} caption {c}" for c in range(5)]
        assert s["json"]["captions"] == 5
    assert [image_of(s) for s in train] == sorted(image_of(s) for s in train)  # first-appearance order


def test_a_caption_that_an_images_rows_repeat_is_held_once(tmp_path):
    """A row pasted twice doubled its caption's share of the image's draws."""
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 0))
    rows = [("a.jpg", "a cat"), ("a.jpg", "a small cat"), ("./a.jpg", "a cat"), ("a.jpg", ["a small cat", "a dog"])]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": image, "caption": caption}) + "\n" for image, caption in rows))
    prepare(config(manifest, tmp_path / "out"), progress=False)
    [sample] = samples(tmp_path / "out")
    assert sample["txt"].split("\n") == ["a cat", "a small cat", "a dog"] and sample["json"]["captions"] == 3


def image(name: str) -> bytes:
    """An image of its own for each name (the same name, the same bytes, wherever it is written)."""
    return jpeg_bytes((40, 40), zlib.crc32(name.encode()))


def folder_input(tmp_path, names):
    root = tmp_path / "in"
    for name in names:
        put(root, f"{name}.jpg", image(name), f"caption {name}")
    return root


def manifest_input(tmp_path, names):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in names:
        (tmp_path / "img" / f"{name}.jpg").write_bytes(image(name))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"img/{name}.jpg", "caption": f"caption {name}"}) + "\n"
                                for name in names))
    return manifest


def shard_input(tmp_path, names):
    """img2dataset-like tars, no index yet (prepare indexes them), two samples each, the same keys in every tar."""
    root = tmp_path / "tars"
    root.mkdir(exist_ok=True)
    for path in [*root.glob("*.idx"), *root.glob("*.json")]:
        path.unlink()  # indexed again, as a user reindexes a folder of tars that grew
    for name in names:
        with TarWriter(str(root / f"{name}.tar")) as tar:
            for key in ("0", "1"):
                tar.write({"__key__": key, "jpg": image(f"{name}-{key}"), "txt": f"caption {name}-{key}"})
    return root


def sides(out) -> tuple[set[str], set[str]]:
    return {s["txt"] for s in samples(out)}, {s["txt"] for s in samples(out / "val")}


@pytest.mark.parametrize("make", [folder_input, manifest_input, shard_input])
def test_a_samples_side_depends_on_it_alone_not_on_what_else_the_input_holds(tmp_path, make):
    names = [f"pic{i:02d}" for i in range(30)]
    out = tmp_path / "out"
    prepare(config(make(tmp_path, names), out, val_fraction=0.3), progress=False)
    train, val = sides(out)
    assert 0.15 < len(val) / (len(train) + len(val)) < 0.45

    prepare(config(make(tmp_path, ["000_sorts_first", *names]), out, val_fraction=0.3), progress=False)
    more_train, more_val = sides(out)
    assert train <= more_train and val <= more_val
    assert {c.split("-")[0] for c in (more_train | more_val) - (train | val)} == {"caption 000_sorts_first"}

    names.insert(0, "000_sorts_first")
    gone = names.pop(4)
    for path in tmp_path.rglob(f"{gone}.*"):
        path.unlink()
    prepare(config(make(tmp_path, names), out, val_fraction=0.3), progress=False)
    fewer_train, fewer_val = sides(out)
    assert fewer_train <= more_train and fewer_val <= more_val
    assert {c.split("-")[0] for c in (more_train | more_val) - (fewer_train | fewer_val)} == {f"caption {gone}"}


def coco_like(root: Path, names, prefix: str = "") -> Path:
    """COCO's layout: the manifest in annotations/, its images beside that folder (`../images/x.jpg`), two rows
    (captions) each: the images lie outside the manifest's folder, whose identity was their absolute path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    rows = []
    for name in names:
        (root / "images" / f"{prefix}{name}.jpg").write_bytes(image(name))
        rows += [{"image": f"../images/{prefix}{name}.jpg", "caption": f"caption {name} {c}"} for c in range(2)]
    manifest = root / "annotations" / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def test_the_same_data_at_another_path_or_under_other_names_has_the_same_split(tmp_path):
    """Copied to another disk (a node-local copy, another cluster), a COCO-like tree was split anew: 34 of 39
    held-out samples moved into training. The images renamed, or a folder reached by another path: the same."""
    names = [f"pic{i:02d}" for i in range(40)]
    coco_like(tmp_path / "a", names)
    shutil.copytree(tmp_path / "a", tmp_path / "b_moved")
    coco_like(tmp_path / "renamed", names, prefix="x_")
    split = {}
    for tree in ("a", "b_moved", "renamed"):
        prepare(config(tmp_path / tree / "annotations/m.jsonl", tmp_path / f"out_{tree}", val_fraction=0.3),
                progress=False)
        split[tree] = sides(tmp_path / f"out_{tree}")
    assert split["a"][1] and split["a"][0]
    assert split["a"] == split["b_moved"] == split["renamed"]

    folder = folder_input(tmp_path, names)
    (tmp_path / "link").symlink_to(folder)
    prepare(config(folder, tmp_path / "f1", val_fraction=0.3), progress=False)
    prepare(config(tmp_path / "link", tmp_path / "f2", val_fraction=0.3), progress=False)
    assert sides(tmp_path / "f1") == sides(tmp_path / "f2")
    assert {c.split(" ")[1] for c in sides(tmp_path / "f1")[1]} == {c.split(" ")[1] for c in split["a"][1]}


def test_a_source_grown_by_siblings_keeps_every_earlier_samples_side(tmp_path):
    """`input=raw/cc3m` first, then `input=raw` once two more sources sit beside it (README's grown-folder resume):
    15 of 19 held-out samples moved into training, so a resume validated on samples it had trained on."""
    raw = tmp_path / "raw"
    for source in ("cc3m", "laion", "wikiart"):
        for i in range(25):
            put(raw / source, f"{i:03d}.jpg", image(f"{source}{i}"), f"{source} caption {i}")
    prepare(config(raw / "cc3m", tmp_path / "cc", val_fraction=0.3), progress=False)
    prepare(config(raw, tmp_path / "all", val_fraction=0.3), progress=False)
    (train, val), (all_train, all_val) = sides(tmp_path / "cc"), sides(tmp_path / "all")
    assert val and train <= all_train and val <= all_val


def test_the_same_samples_sharded_otherwise_or_rekeyed_have_the_same_split(tmp_path):
    """Shard input: the side hung on shard name + key, so the same samples cut into shards of 100 or of 250 were
    split differently (28 of 43 moved), and prepare's own keys (positions) moved 35 of 43 when one row was added
    before the others."""
    names = [f"pic{i:03d}" for i in range(60)]
    for size in (7, 25):
        prepare(config(folder_input(tmp_path, names), tmp_path / f"s{size}", shard_max_samples=size), progress=False)
    folder = tmp_path / "in"
    put(folder, "000_first.jpg", image("000_first"), "caption 000_first")  # shifts every later key by one
    prepare(config(folder, tmp_path / "rekeyed", shard_max_samples=7), progress=False)
    for shards in ("s7", "s25", "rekeyed"):
        prepare(config(tmp_path / shards, tmp_path / f"split_{shards}", val_fraction=0.3), progress=False)
    train, val = sides(tmp_path / "split_s7")
    assert val and sides(tmp_path / "split_s25") == (train, val)
    more_train, more_val = sides(tmp_path / "split_rekeyed")
    assert train <= more_train and val <= more_val


def test_exact_duplicates_land_on_one_side_and_are_counted(tmp_path, capsys):
    """Scraped sets repost: each image saved twice under two names (same bytes, same caption) put 54 of 60
    validation images' twins in training. Both copies are kept (no option removes them), on one side, and
    counted; the same image under another caption is on its side too, but is no exact duplicate."""
    root = tmp_path / "raw"
    for i in range(40):
        for copy in "ab":
            put(root, f"{i:04d}{copy}.jpg", image(str(i)), f"caption {i}")
    for i in range(5):
        put(root, f"{i:04d}c.jpg", image(str(i)), f"another caption {i}")
    assert main(["prepare", f"input={root}", f"output={tmp_path / 'out'}", "image_size=32", "min_side=32",
                 "num_workers=0", "val_fraction=0.3"]) == 0
    assert "kept        40  exact duplicates" in capsys.readouterr().out
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["duplicates"] == 40 and report["kept"] == 85
    train, val = (list(iter_samples(root_, ["jpg", "txt"])) for root_ in (tmp_path / "out", tmp_path / "out/val"))
    number = lambda s: s["txt"].split(" ")[-1]  # noqa: E731
    assert val and not {number(s) for s in train} & {number(s) for s in val}
    assert len(train) + len(val) == 85


def test_the_split_rule_is_recorded_and_an_older_split_is_said_to_be_redrawn(tmp_path, capsys):
    root, out = small_folder(tmp_path, 24), tmp_path / "out"
    prepare(config(root, out, val_fraction=0.3), progress=False)
    index = lambda folder: json.loads((folder / "index.json").read_text())  # noqa: E731
    assert index(out)["meta"]["split_rule"] == index(out / "val")["meta"]["split_rule"] == SPLIT_RULE
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0",
                 "val_fraction=0.3"]) == 0
    assert "note:" not in capsys.readouterr().out  # the same rule: nothing moved

    older = index(out / "val")
    del older["meta"]["split_rule"]  # as a prepare before the rule was recorded wrote it
    (out / "val/index.json").write_text(json.dumps(older))
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0",
                 "val_fraction=0.3"]) == 0
    printed = capsys.readouterr().out
    assert f"note: {out / 'val'} held a split drawn by {NAME_RULE}" in printed
    assert "start its training afresh" in printed
    assert index(out / "val")["meta"]["split_rule"] == SPLIT_RULE


def small_folder(tmp_path, n=12):
    return folder_input(tmp_path, [f"pic{i:02d}" for i in range(n)])


@pytest.mark.parametrize("val_fraction", [0.0, 0.5])
def test_a_val_folder_holding_the_users_files_is_refused_before_any_work_never_deleted(tmp_path, val_fraction, capsys):
    root, out = small_folder(tmp_path), tmp_path / "out"
    prepare(config(root, out, val_fraction=0.5), progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (out / "val/notes.md").write_text("my notes")
    (out / "val/mine").mkdir()
    with pytest.raises(SplitDirError, match=rf"{out / 'val'} holds 2 entries prepare did not write \(mine/, notes.md\)"):
        prepare(config(root, out, val_fraction=val_fraction), progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        [*before, Path("val/notes.md"), Path("val/mine")])  # the earlier output whole, index.json included
    assert main(["prepare", f"input={root}", f"output={out}", "num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "notes.md" in err


def test_a_val_folder_that_is_a_link_is_refused(tmp_path):
    root, out = small_folder(tmp_path), tmp_path / "out"
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious/photo.jpg").write_bytes(b"mine")
    out.mkdir()
    (out / "val").symlink_to(tmp_path / "precious", target_is_directory=True)
    with pytest.raises(SplitDirError, match="is a link"):
        prepare(config(root, out, val_fraction=0.5), progress=False)
    assert [p.name for p in (tmp_path / "precious").iterdir()] == ["photo.jpg"]


def test_a_val_folder_of_megadalles_own_files_is_replaced_or_removed(tmp_path):
    root, out = small_folder(tmp_path), tmp_path / "out"
    prepare(config(root, out, val_fraction=0.5), progress=False)
    for leftover in (".shard-000007.tar.tmp", ".index.json.123-0a1b2c3d.tmp", "report.json", ".index.lock"):
        (out / "val" / leftover).write_bytes(b"")
    prepare(config(root, out, val_fraction=0.5, shard_max_samples=100), progress=False)
    assert sorted(p.name for p in (out / "val").iterdir()) == ["index.json", "shard-000000.tar",
                                                                 "shard-000000.tar.idx"]
    prepare(config(root, out), progress=False)
    assert not (out / "val").exists()


def test_an_image_folders_own_val_folder_is_held_out_as_a_shard_inputs_is(tmp_path):
    """A folder laid out train/ and val/ (ImageFolder's layout) had its validation images trained on, without a
    word; a `val` deeper down, or a file named so, is no split."""
    root = tmp_path / "in"
    for name in ("a", "b", "c"):
        put(root, f"train/{name}.jpg", image(name), f"caption {name}")
    for name in ("d", "e"):
        put(root, f"val/{name}.jpg", image(name), f"caption {name}")
    put(root, "train/val/f.jpg", image("f"), "caption f")
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    assert sides(tmp_path / "out") == ({"caption a", "caption b", "caption c", "caption f"}, {"caption d", "caption e"})
    assert summary.val_kept == 2
    with pytest.raises(SecondSplitError, match=f"val_fraction=0.3: {root} has its own validation split \\(2 "
                                               f"samples in {root / 'val'}\\)"):
        prepare(config(root, tmp_path / "out", val_fraction=0.3), progress=False)


def test_re_preparing_a_prepared_folder_keeps_its_validation_split(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    prepare(config(small_folder(tmp_path, 24), first, val_fraction=0.3), progress=False)
    train, val = sides(first)
    assert train and val

    summary = prepare(config(first, again, image_size=16), progress=False)  # resize; val_fraction left at 0
    assert sides(again) == (train, val) and summary.val_kept == len(val)
    assert json.loads((again / "val/index.json").read_text())["meta"]["split_rule"] == SPLIT_RULE  # the input's
    assert {s["jpg"].size for root in (again, again / "val") for s in iter_samples(root, ["jpg"])} == {(16, 16)}

    with pytest.raises(SecondSplitError, match=f"val_fraction=0.3: {first} has its own validation split"):
        prepare(config(first, again, val_fraction=0.3), progress=False)  # would hold out about 0.3 on top
    assert sides(again) == (train, val)
