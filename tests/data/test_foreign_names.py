"""Names that are not UTF-8 (a file copied from a Latin-1 system, a tar key written there): `prepare` keeps their
samples and reports them as text, and splits them by their image like any other (a name never decides a side)."""
from __future__ import annotations

import io
import json
import os
import tarfile

from megadalle.cli import main
from megadalle.data.shards import iter_samples
from megadalle.data.split import image_digest, is_validation
from tests.data.conftest import jpeg_bytes

def test_prepare_keeps_and_reports_files_whose_names_are_not_utf8(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    for name, caption in ((b"caf\xe9", "a cafe"), (b"na\xefve", None), (b"ok", "fine")):
        (root / os.fsdecode(name + b".jpg")).write_bytes(jpeg_bytes((40, 40), len(name)))
        if caption is not None:
            (root / os.fsdecode(name + b".txt")).write_text(caption)
    out = tmp_path / "out"
    # 0.5: the image of caf\xe9 is at 0.937 of [0, 1) (training), that of ok at 0.137 (held out)
    assert not is_validation(image_digest(jpeg_bytes((40, 40), 4)), 0.5)
    assert is_validation(image_digest(jpeg_bytes((40, 40), 2)), 0.5)
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0",
                 "val_fraction=0.5"]) == 0
    assert "kept 2 samples (1 held out for validation)" in capsys.readouterr().out
    assert [(s["json"]["source"], s["txt"]) for s in iter_samples(out, ["txt", "json"])] == \
        [("caf\\xe9.jpg", "a cafe")]
    assert [s["json"]["source"] for s in iter_samples(out / "val", ["json"])] == ["ok.jpg"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [(b["source"], b["reason"], b["detail"]) for b in report["bad"]] == \
        [("na\\xefve.jpg", "missing_caption", "no na\\xefve.txt beside the image")]


def add(tar: tarfile.TarFile, name: bytes, data: bytes) -> None:
    info = tarfile.TarInfo(os.fsdecode(name))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_prepare_reads_a_tar_whose_keys_are_not_utf8(tmp_path, capsys):
    root = tmp_path / "wds"
    root.mkdir()
    with tarfile.open(root / "w.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, b"caf\xe9.jpg", jpeg_bytes((40, 40), 1))
        add(tar, b"caf\xe9.txt", b"a cafe")
        add(tar, b"na\xefve.jpg", jpeg_bytes((40, 40), 2))  # no caption: the index skips it
    out = tmp_path / "out"
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0",
                 "val_fraction=0.4"]) == 0  # its image is at 0.491 of [0, 1): training
    assert "kept 1 samples" in capsys.readouterr().out
    (sample,) = iter_samples(out, ["txt", "json"])
    assert sample["json"]["input_key"] == "caf\\xe9" and sample["txt"] == "a cafe"
    report = json.loads((root / "index-report.json").read_text(encoding="utf-8"))
    assert [(b["key"], b["reason"]) for b in report["bad"]] == [("na\\xefve", "missing_field")]


def test_half_an_emoji_in_json_is_kept_as_text(tmp_path):
    """A lone surrogate escape (`"\\ud83d"`, an emoji cut in two by a scraper) is valid JSON that UTF-8 cannot hold:
    in a manifest's caption or a shard's json it stopped prepare when the shard was written."""
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((40, 40), 1))
    (tmp_path / "m.jsonl").write_text('{"image": "a.jpg", "caption": "a \\ud83d cat"}\n')
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds/w.tar", "w") as tar:
        add(tar, b"k.jpg", jpeg_bytes((40, 40), 2))
        add(tar, b"k.txt", b"a dog")
        add(tar, b"k.json", b'{"url": "http://x/\\ud83d.jpg"}')
    for source, out in (("m.jsonl", "from_manifest"), ("wds", "from_shards")):
        assert main(["prepare", f"input={tmp_path / source}", f"output={tmp_path / out}", "image_size=32",
                     "min_side=32", "num_workers=0"]) == 0
    (sample,) = iter_samples(tmp_path / "from_manifest", ["txt"])
    assert sample["txt"] == "a \ufffd cat"
    (sample,) = iter_samples(tmp_path / "from_shards", ["json"])
    assert sample["json"]["input_json"] == {"url": "http://x/\\ud83d.jpg"}


def test_a_tar_whose_own_name_is_not_utf8_is_indexed_and_prepared(tmp_path, capsys):
    """Its name went into index.json, whose UTF-8 could not hold it: indexing failed as it wrote the index."""
    from megadalle.data.shards import open_index

    root = tmp_path / "wds"
    root.mkdir()
    with tarfile.open(os.fsdecode(os.fsencode(root) + b"/caf\xe9.tar"), "w") as tar:
        add(tar, b"k.jpg", jpeg_bytes((40, 40), 1))
        add(tar, b"k.txt", b"a cafe")
    assert main(["index", str(root)]) == 0
    assert [shard.name for shard in open_index(root).shards] == ["caf\udce9.tar"]
    out = tmp_path / "out"
    assert main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0"]) == 0
    assert "kept 1 samples" in capsys.readouterr().out
