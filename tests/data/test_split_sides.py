"""Which side of the validation split a sample lands on: one image is one sample whatever the manifest's
shape, a sample's side depends on that sample alone, never on what else the input holds, an input's own split
is kept, and `<output>/val/` is replaced only when it is megadalle's."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from webdataset import TarWriter

from megadalle.cli import main
from megadalle.data.prepare import prepare
from megadalle.data.shards import iter_samples
from megadalle.data.sources import find_items
from megadalle.data.split import SecondSplitError, SplitDirError
from tests.data.conftest import jpeg_bytes
from tests.data.test_prepare import config, put


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


def folder_input(tmp_path, names):
    root = tmp_path / "in"
    for name in names:
        put(root, f"{name}.jpg", jpeg_bytes((40, 40), len(name)), f"caption {name}")
    return root


def manifest_input(tmp_path, names):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in names:
        (tmp_path / "img" / f"{name}.jpg").write_bytes(jpeg_bytes((40, 40), len(name)))
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
                tar.write({"__key__": key, "jpg": jpeg_bytes((40, 40), len(name)), "txt": f"caption {name}-{key}"})
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


def test_a_manifest_images_identity_is_its_path_from_the_manifests_folder_whatever_the_spelling(tmp_path):
    data = tmp_path / "data"
    for name in ("img/a.jpg", "b.jpg"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes((40, 40), 2))
    rows = ["img/a.jpg", "./img/../img/a.jpg", str(data / "b.jpg"), "../outside.jpg"]
    (data / "m.jsonl").write_text("".join(json.dumps({"image": row, "caption": row}) + "\n" for row in rows))
    items = find_items(data / "m.jsonl")
    assert [item.identity for item in items] == ["img/a.jpg", "b.jpg", (tmp_path / "outside.jpg").resolve().as_posix()]
    assert items[0].captions == ("img/a.jpg", "./img/../img/a.jpg")
    moved = tmp_path / "moved"
    data.rename(moved)
    assert find_items(moved / "m.jsonl")[0].identity == "img/a.jpg"  # the data set moved as a whole: the same


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


def test_re_preparing_a_prepared_folder_keeps_its_validation_split(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    prepare(config(small_folder(tmp_path, 24), first, val_fraction=0.3), progress=False)
    train, val = sides(first)
    assert train and val

    summary = prepare(config(first, again, image_size=16), progress=False)  # resize; val_fraction left at 0
    assert sides(again) == (train, val) and summary.val_kept == len(val)
    assert {s["jpg"].size for root in (again, again / "val") for s in iter_samples(root, ["jpg"])} == {(16, 16)}

    with pytest.raises(SecondSplitError, match=f"val_fraction=0.3: {first} has its own validation split"):
        prepare(config(first, again, val_fraction=0.3), progress=False)  # would hold out about 0.3 on top
    assert sides(again) == (train, val)
