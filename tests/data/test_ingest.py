"""Shards written elsewhere: `megadalle index`, indexing on first use, and every reader on top of it."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import webdataset as wds

from megadalle.cli import main
from megadalle.config.data import PrepareConfig
from megadalle.data.index import INDEX_NAME, ShardsNotFound, load_offsets, scan_offsets
from megadalle.data.loader import image_loader
from megadalle.data.prepare import prepare
from megadalle.data.shards import SampleReader, ShardIndex, ShardWriter, index_directory, iter_samples, open_index
from megadalle.data.tokenizer import train_tokenizer
from tests.data.conftest import caption, jpeg_bytes


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def tarwriter_shards(tmp_path):
    """Two shards from webdataset's own TarWriter: 9 good samples and 4 bad ones (one of each reason)."""
    root = tmp_path / "wds"
    root.mkdir()
    rng = np.random.default_rng(0)
    good = iter(range(100))
    for shard in range(2):
        with wds.TarWriter(str(root / f"part-{shard}.tar")) as sink:
            for i in range(5):
                n = next(good)
                sink.write({"__key__": f"s{shard}_{i}", "jpg": jpeg_bytes((24, 24), n), "txt": f"good {n} " + caption(rng)})
            if shard == 0:
                sink.write({"__key__": "cut", "jpg": jpeg_bytes((24, 24), 7)[:200], "txt": "a truncated jpeg"})
                sink.write({"__key__": "mute", "jpg": jpeg_bytes((24, 24), 8)})
                sink.write({"__key__": "evil", "jpg": jpeg_bytes((24, 24), 9), "txt": "good pickled",
                            "pyd": pickle.dumps(_CreatesFile(tmp_path / "pwned"))})
            else:
                sink.write({"__key__": "blank", "jpg": jpeg_bytes((24, 24), 10), "txt": "  \n"})
                sink.write({"__key__": "noimage", "txt": "only words"})
    return root


def test_index_skips_and_counts_bad_samples_and_readers_never_see_them(tarwriter_shards, tmp_path):
    summary = index_directory(tarwriter_shards, ["txt"], require_media=True)
    assert summary.kept == 11 and summary.shards == 2
    assert summary.skipped == {"bad_jpg": 1, "empty_caption": 1, "missing_field": 1, "no_media": 1}
    report = json.loads((tarwriter_shards / "index-report.json").read_text())
    assert {b["key"]: b["reason"] for b in report["bad"]} == {"cut": "bad_jpg", "mute": "missing_field",
                                                               "blank": "empty_caption", "noimage": "no_media"}
    index = ShardIndex.load(tarwriter_shards)
    assert index.meta["image_size"] == 24 and "pyd" in index.fields
    assert load_offsets(tarwriter_shards / "part-0.tar").shape == (6, 2)  # a gap where "cut" and "mute" were
    keys = [s["__key__"] for s in iter_samples(tarwriter_shards, ["txt"])]
    assert keys == [f"s0_{i}" for i in range(5)] + ["evil"] + [f"s1_{i}" for i in range(5)]
    reader = SampleReader(index)
    assert [reader.read(i, ["txt"])["__key__"] for i in (5, 6, 0)] == ["evil", "s1_0", "s0_0"]
    assert not (tmp_path / "pwned").exists()  # the pickle member was never decoded


def test_tars_copied_with_their_index_but_not_their_offsets_are_indexed_again(tarwriter_shards, tmp_path, capsys):
    """`cp *.tar index.json` to a node's disk left the `.tar.idx` behind: readers scanned the whole tars and met the
    samples indexing had skipped (encode then never finished; the loader called the shard changed)."""
    index_directory(tarwriter_shards, ["txt"], require_media=True)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in [*tarwriter_shards.glob("*.tar"), tarwriter_shards / "index.json"]:
        (copy / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    keys = [s["__key__"] for s in iter_samples(copy, ["txt"])]
    assert keys == [f"s0_{i}" for i in range(5)] + ["evil"] + [f"s1_{i}" for i in range(5)]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[index]")]
    assert len(said) == 1 and "(without their .tar.idx: part-0.tar, part-1.tar)" in said[0]
    assert sorted(p.name for p in copy.glob("*.tar.idx")) == ["part-0.tar.idx", "part-1.tar.idx"]


def _padded_tar(path, first_caption_bytes: int):
    """Five samples padded to 10 KiB as tarfile writes them: the first caption's length moves the others' offsets,
    not the file's size."""
    import io
    import tarfile

    image = jpeg_bytes((16, 16), 1)
    with tarfile.open(path, "w") as tar:
        for i in range(5):
            text = (b"x" * first_caption_bytes) if i == 0 else f"caption {i}".encode()
            for name, data in ((f"k{i}.jpg", image), (f"k{i}.txt", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_a_tar_rewritten_at_the_same_size_is_indexed_again(tmp_path, capsys):
    """tarfile pads every archive to 10 KiB, so a tar downloaded again with other samples keeps its size: its stale
    offsets were trusted and readers died with tarfile's "unexpected end of data"; `megadalle index` said
    "unchanged". A plain copy (another mtime, the same bytes) is not read again."""
    root = tmp_path / "dl"
    root.mkdir()
    _padded_tar(root / "00000.tar", 10)
    index_directory(root, ["txt"], True)
    size = (root / "00000.tar").stat().st_size
    _padded_tar(root / "00000.tar", 700)
    stat = (root / "00000.tar").stat()
    os.utime(root / "00000.tar", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a second later, as a download
    assert (root / "00000.tar").stat().st_size == size
    capsys.readouterr()
    assert [s["txt"][:3] for s in iter_samples(root, ["txt"])] == ["xxx"] + ["cap"] * 4
    assert "(changed: 00000.tar)" in capsys.readouterr().err
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in root.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert main(["index", f"dir={copy}", "num_workers=0"]) == 0
    assert "read 0 of 1 tars: 1 unchanged since the last indexing" in capsys.readouterr().out


def test_two_samples_of_one_key_back_to_back_are_counted_not_merged(tmp_path):
    root = tmp_path / "dup"
    root.mkdir()
    with wds.TarWriter(str(root / "part-0.tar")) as sink:
        for key, n in (("a", 1), ("b", 2), ("b", 3), ("c", 4)):
            sink.write({"__key__": key, "jpg": jpeg_bytes((24, 24), n), "txt": f"caption {n}"})
    summary = index_directory(root, ["txt"], require_media=True)
    assert summary.kept == 2 and summary.skipped == {"duplicate_key": 1}
    assert [s["__key__"] for s in iter_samples(root, ["txt"])] == ["a", "c"]


def test_upper_case_extensions_are_the_fields_readers_ask_for(tmp_path):
    root = tmp_path / "upper"
    root.mkdir()
    with wds.TarWriter(str(root / "part-0.tar")) as sink:
        sink.write({"__key__": "IMG_1", "JPG": jpeg_bytes((24, 24), 1), "TXT": "a camera's caption"})
    summary = index_directory(root, ["txt"], require_media=True)
    assert summary.kept == 1 and summary.skipped == {}
    assert [(s["__key__"], s["txt"]) for s in iter_samples(root, ["txt"])] == [("IMG_1", "a camera's caption")]
    assert next(iter(image_loader(root, 1, 16, shuffle=False, epochs=1, num_workers=0)))["image"].shape == (1, 3, 16, 16)


def test_a_loader_indexes_such_a_directory_on_first_use(tarwriter_shards, capsys):
    loader = image_loader(tarwriter_shards, global_batch=11, image_size=16, shuffle=False, epochs=1)
    assert "indexing them now" in capsys.readouterr().err
    batch = next(iter(loader))
    assert batch["image"].shape == (11, 3, 16, 16) and all(t.startswith("good") for t in batch["txt"])
    assert image_loader(tarwriter_shards, global_batch=11, image_size=16).index.total == 11
    assert "indexing" not in capsys.readouterr().err  # once


@pytest.mark.parametrize("cut", [0.35, 0.6, 1.0])
def test_a_shard_cut_short_keeps_the_complete_samples_before_the_cut(tmp_path, cut):
    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": f"k{i}", "png": jpeg_bytes((20, 20), i, "PNG"), "txt": f"caption {i}"})
    content_end = int(scan_offsets(tmp_path / "a.tar")[0][-1])  # 1.0: every member there, the end marker lost
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[:int(content_end * cut)])  # inside a member or at a header
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.skipped.get("truncated_shard") == 1 and 0 < summary.kept < 4
    assert [s["txt"] for s in iter_samples(tmp_path, ["txt", "png"])] == [f"caption {i}" for i in range(summary.kept)]


def test_an_unfinished_megadalle_output_is_refused_not_indexed(tmp_path):
    writer = ShardWriter(tmp_path, max_count=1)
    for i in range(2):
        writer.write({"__key__": f"k{i}", "txt": "x", "png": jpeg_bytes((8, 8), i, "PNG")})
    writer.finish_shard()  # shards and offset files, but the writer never published index.json
    with pytest.raises(ShardsNotFound, match="not a finished megadalle shard directory"):
        open_index(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardsNotFound, match="no \\*.tar"):
        index_directory(tmp_path / "empty")


def test_an_unfinished_output_on_a_read_only_mount_gets_the_usual_error(tmp_path, monkeypatch):
    """The offsets are judged under the indexing lock; where the lock file cannot be created (a
    read-only directory: root ignores permissions, so the refusal is simulated) no one can be
    indexing, and the refusal is the usual one, not an OSError about the lock."""
    import builtins

    from megadalle.data.ingest import first_use

    writer = ShardWriter(tmp_path, max_count=1)
    writer.write({"__key__": "k0", "txt": "x", "png": jpeg_bytes((8, 8), 0, "PNG")})
    writer.finish_shard()

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".index.lock"):
            raise PermissionError(13, "Read-only file system", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(first_use, "open", read_only, raising=False)
    with pytest.raises(ShardsNotFound, match="not a finished megadalle shard directory"):
        open_index(tmp_path)
    assert not (tmp_path / ".index.lock").exists()


@pytest.fixture
def img2dataset_dir(tmp_path):
    """What img2dataset writes: 00000.tar (jpg/txt/json per key, images not square), parquet and stats beside."""
    root = tmp_path / "laion"
    root.mkdir()
    rng = np.random.default_rng(3)
    for shard in range(2):
        with wds.TarWriter(str(root / f"{shard:05d}.tar")) as sink:
            for i in range(6):
                key = f"{shard:05d}{i:04d}"
                sink.write({"__key__": key, "jpg": jpeg_bytes((40 + 4 * i, 32), 10 * shard + i), "txt": caption(rng),
                            "json": {"url": f"http://x/{key}.jpg", "key": key, "status": "success"}})
        (root / f"{shard:05d}.parquet").write_bytes(b"PAR1 not read by megadalle PAR1")
        (root / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 6, "successes": 6}))
    return root


def test_index_verb_on_an_img2dataset_directory(img2dataset_dir, capsys):
    assert main(["index", str(img2dataset_dir), "num_workers=2"]) == 0  # the bare DIR is dir=DIR
    assert "kept 12 samples in 2 shards, skipped 0" in capsys.readouterr().out
    index = ShardIndex.load(img2dataset_dir)
    assert [s.name for s in index.shards] == ["00000.tar", "00001.tar"] and index.fields == ["jpg", "json", "txt"]
    assert "image_size" not in index.meta  # sizes differ: loaders resize to the size they are given
    assert main(["index", f"dir={img2dataset_dir / 'missing'}"]) == 2


def test_without_decoding_only_the_fields_are_checked(tarwriter_shards):
    summary = index_directory(tarwriter_shards, ["txt"], require_media=True, decode=False)
    assert summary.skipped == {"empty_caption": 1, "missing_field": 1, "no_media": 1}
    assert summary.kept == 12  # the cut jpeg passes: it is never decoded


def test_tokenizer_prepare_and_encode_read_img2dataset_shards(img2dataset_dir, tmp_path):
    tok = train_tokenizer(img2dataset_dir, tmp_path / "tok.model", vocab_size=40)
    first = next(iter_samples(img2dataset_dir, ["txt"]))["txt"]
    assert (img2dataset_dir / INDEX_NAME).is_file() and tok.encode(first, 8) != tok.encode("", 8)

    summary = prepare(PrepareConfig(input=str(img2dataset_dir), output=str(tmp_path / "out"), image_size=16,
                                    min_side=8, num_workers=0), progress=False)
    assert summary.kept == 12 and not summary.skipped
    resized = list(iter_samples(tmp_path / "out", ["jpg", "txt", "json"]))
    originals = list(iter_samples(img2dataset_dir, ["txt", "json"]))
    assert all(s["jpg"].size == (16, 16) for s in resized)
    assert [s["txt"] for s in resized] == [s["txt"] for s in originals]
    # the input's key and metadata (img2dataset's url...) survive the new key and metadata
    assert [(s["json"]["input_key"], s["json"]["input_json"]) for s in resized] == \
        [(s["__key__"], s["json"]) for s in originals]

    from megadalle.config.dvae import DVAEConfig
    from megadalle.encode import encode_shards
    from megadalle.models.dvae import DVAE

    torch.manual_seed(0)
    model = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=16, n_init=8)).eval()
    tokens = encode_shards(model, img2dataset_dir, tmp_path / "tokens", batch_size=5)
    assert tokens.total == 12 and [s["codes.npy"].shape for s in iter_samples(tokens.root, ["codes.npy"])] == [(8, 8)] * 12


def _open_logging_to(root, log):
    import sys

    with open(log, "w") as sys.stderr:
        open_index(root)


def test_processes_starting_together_index_once(tarwriter_shards, tmp_path):
    import multiprocessing as mp

    logs = [tmp_path / f"rank{r}.log" for r in range(3)]
    procs = [mp.get_context("fork").Process(target=_open_logging_to, args=(tarwriter_shards, log)) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sum("indexing them now" in log.read_text() for log in logs) == 1
    assert ShardIndex.load(tarwriter_shards).total == 11


def test_a_process_arriving_mid_indexing_waits_for_the_index(tarwriter_shards, tmp_path):
    """Another process indexing writes the offset files before index.json: one arriving in between
    must wait for the index, not take the offsets for an unfinished output (a CI run failed so)."""
    import multiprocessing as mp

    from megadalle.data.ingest.first_use import _locked

    log = tmp_path / "late.log"
    with _locked(tarwriter_shards):  # this process is the one indexing
        index_directory(tarwriter_shards, ["txt"], require_media=True)
        index = tarwriter_shards / INDEX_NAME
        index.rename(tmp_path / INDEX_NAME)  # offsets written, index.json not yet
        late = mp.get_context("fork").Process(target=_open_logging_to, args=(tarwriter_shards, log))
        late.start()
        late.join(2)
        assert late.is_alive(), log.read_text()  # waiting on the lock, not failed
        (tmp_path / INDEX_NAME).rename(index)
    late.join(60)
    assert late.exitcode == 0 and "indexing them now" not in log.read_text()


def test_encode_skips_what_indexing_skipped(tarwriter_shards, tmp_path):
    from megadalle.config.dvae import DVAEConfig
    from megadalle.encode import encode_shards
    from megadalle.models.dvae import DVAE

    index_directory(tarwriter_shards, ["txt"], require_media=True)
    model = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=16, n_init=8)).eval()
    tokens = encode_shards(model, tarwriter_shards, tmp_path / "tokens", batch_size=4)
    keys = [s["__key__"] for s in iter_samples(tokens.root, ["txt"])]
    assert tokens.total == 11 and keys == [s["__key__"] for s in iter_samples(tarwriter_shards, ["txt"])]


def test_the_index_verb_refuses_an_unfinished_prepare_output(tmp_path, capsys):
    """A killed `prepare` leaves shards and offset files but no index.json: indexing it would publish
    an unfinished (possibly mixed) output as finished."""
    from megadalle.cli import main

    writer = ShardWriter(tmp_path, max_count=1)
    for i in range(2):
        writer.write({"__key__": f"k{i}", "txt": "x", "png": jpeg_bytes((8, 8), i, "PNG")})
    writer.finish_shard()
    with pytest.raises(ShardsNotFound, match="unfinished.*rerun"):
        index_directory(tmp_path, ["txt"], True)
    assert main(["index", str(tmp_path), "num_workers=0"]) == 2
    assert "rerun" in capsys.readouterr().err
    assert not (tmp_path / INDEX_NAME).exists()


def test_an_interrupted_index_can_be_rerun(tarwriter_shards, monkeypatch):
    """`megadalle index` itself writes offset files before index.json: killed midway, it must not leave a
    directory that both `index` and the readers refuse."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardIndex, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        index_directory(tarwriter_shards, ["txt"], True)
    assert not (tarwriter_shards / INDEX_NAME).exists() and list(tarwriter_shards.glob("*.idx"))
    monkeypatch.undo()
    assert index_directory(tarwriter_shards, ["txt"], True).kept == 11
    monkeypatch.setattr(ShardIndex, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        index_directory(tarwriter_shards, ["txt"], True)
    monkeypatch.undo()
    assert not (tarwriter_shards / INDEX_NAME).exists()
    assert open_index(tarwriter_shards).total == 11  # a reader re-indexes it too
    assert not (tarwriter_shards / ".indexing").exists()


def _tar(path, members):
    """A tar of (name, bytes) files; bytes None makes `name` a directory, a str makes it a symlink to that."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else None)


def test_macos_appledouble_members_are_passed_over(tmp_path):
    """macOS's bsdtar writes `./._<file>` (extended attributes) before each file: their key `./` must not
    break the samples around them."""
    members = []
    for i in range(4):
        for ext, data in (("jpg", jpeg_bytes((24, 24), i)), ("txt", f"caption {i}".encode())):
            members += [(f"./._{i:04d}.{ext}", b"\0\5\26\7" + bytes(60)), (f"./{i:04d}.{ext}", data)]
    _tar(tmp_path / "mac.tar", [*members, ("./.DS_Store", b"junk")])
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.kept == 4 and summary.skipped == {}
    assert [s["txt"] for s in iter_samples(tmp_path, ["txt", "jpg"])] == [f"caption {i}" for i in range(4)]


@pytest.mark.parametrize("extra", [("README", b"made by hand\n"), ("subdir/", None), ("link", "0002.jpg")])
def test_a_member_after_the_last_sample_does_not_make_the_tar_look_cut(tmp_path, extra):
    members = [(f"{i:04d}.{ext}", data) for i in range(3)
               for ext, data in (("jpg", jpeg_bytes((24, 24), i)), ("txt", f"caption {i}".encode()))]
    _tar(tmp_path / "a.tar", [*members, extra])
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.kept == 3 and summary.skipped == {}


def test_a_tar_cut_after_a_trailing_member_keeps_every_sample(tmp_path):
    members = [(f"{i:04d}.{ext}", data) for i in range(3)
               for ext, data in (("jpg", jpeg_bytes((24, 24), i)), ("txt", f"caption {i}".encode()))]
    _tar(tmp_path / "a.tar", [*members, ("README", b"x" * 1000)])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[:int(scan_offsets(tmp_path / "a.tar")[0][-1]) + 1536])  # no end marker
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.kept == 3 and summary.skipped == {"truncated_shard": 1}
    assert "every sample before the cut kept" in summary.bad[0]["detail"]


def test_a_dot_in_a_file_stem_is_named_when_it_splits_the_key(tmp_path):
    """webdataset's rule (the key ends at the first dot) stays; the skip says why `photo.v1.txt` is no caption."""
    _tar(tmp_path / "a.tar", [("photo.v1.jpg", jpeg_bytes((24, 24), 1)), ("photo.v1.txt", b"first"),
                              ("photo.v2.jpg", jpeg_bytes((24, 24), 2)), ("photo.v2.txt", b"second"),
                              ("ok.jpg", jpeg_bytes((24, 24), 3)), ("ok.txt", b"kept")])
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.kept == 1 and summary.skipped == {"missing_field": 1}
    detail = summary.bad[0]["detail"]
    assert "a dot in a file name's stem splits the key" in detail and "'v1.txt'" in detail
    _tar(tmp_path / "a.tar", [("photo.v1.jpg", jpeg_bytes((24, 24), 1)), ("photo.txt", b"first")])
    assert "splits the key" in index_directory(tmp_path, ["txt"], True).bad[0]["detail"]  # no_media


def test_a_caption_of_unicode_spaces_only_is_blank(tmp_path):
    """bytes.strip() knows ASCII spaces only: a txt of no-break spaces passed indexing and reached training as
    an empty caption. Blankness is the readers' caption rule (captions.caption_lines)."""
    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        sink.write({"__key__": "nbsp", "jpg": jpeg_bytes((24, 24), 1), "txt": "\u00a0\u00a0\n\u3000"})
        sink.write({"__key__": "ok", "jpg": jpeg_bytes((24, 24), 2), "txt": "\u00a0a caption\u00a0"})
    summary = index_directory(tmp_path, ["txt"], True)
    assert summary.kept == 1 and summary.skipped == {"empty_caption": 1} and summary.bad[0]["key"] == "nbsp"


def test_unreadable_metadata_is_a_warning_and_every_reader_keeps_the_sample(tmp_path):
    """Only the image and the caption decide whether a sample is kept: a string `.id` or a cut `.json` is the
    input's business, counted in the report; prepare and encode, which copy the json, leave it out."""
    root = tmp_path / "src"
    root.mkdir()
    with wds.TarWriter(str(root / "a.tar")) as sink:
        sink.write({"__key__": "flickr", "jpg": jpeg_bytes((24, 24), 1), "txt": "a string id", "id": b"flickr_0abc"})
        sink.write({"__key__": "cut", "jpg": jpeg_bytes((24, 24), 2), "txt": "a cut json", "json": b'{"url": "ht'})
        sink.write({"__key__": "fine", "jpg": jpeg_bytes((24, 24), 3), "txt": "fine", "json": b'{"url": "x"}'})
    summary = index_directory(root, ["txt"], True)
    assert summary.kept == 3 and summary.skipped == {} and summary.warned == {"bad_id": 1, "bad_json": 1}
    assert "kept         1  with bad_json" in summary.text()
    report = json.loads((root / "index-report.json").read_text())
    assert {w["key"]: w["reason"] for w in report["warnings"]} == {"flickr": "bad_id", "cut": "bad_json"}

    batch = next(iter(image_loader(root, 3, 16, shuffle=False, epochs=1, num_workers=0)))
    assert batch["txt"] == ["a string id", "a cut json", "fine"]
    prepared = prepare(PrepareConfig(input=str(root), output=str(tmp_path / "out"), image_size=16, min_side=8,
                                     num_workers=0), progress=False)
    assert prepared.kept == 3
    assert [s["json"].get("input_json") for s in iter_samples(tmp_path / "out", ["json"])] == \
        [None, None, {"url": "x"}]

    from megadalle.config.dvae import DVAEConfig
    from megadalle.encode import encode_shards
    from megadalle.models.dvae import DVAE

    model = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=16, n_init=8)).eval()
    tokens = encode_shards(model, root, tmp_path / "tokens", batch_size=2)
    assert [s["json"] for s in iter_samples(tokens.root, ["json"])] == [{}, {}, {"url": "x"}]


def _shard(root, name, keys, seed=0):
    """A TarWriter shard holding one good sample per key."""
    with wds.TarWriter(str(root / name)) as sink:
        for n, key in enumerate(keys):
            sink.write({"__key__": key, "jpg": jpeg_bytes((16, 16), seed + n), "txt": f"caption {key}"})


@pytest.fixture
def downloading(tmp_path):
    """img2dataset half way: 2 shards of 5 samples written so far."""
    root = tmp_path / "dl"
    root.mkdir()
    for shard in range(2):
        _shard(root, f"{shard:05d}.tar", [f"{shard}_{i}" for i in range(5)], 10 * shard)
    return root


def _loaded(root) -> int:
    return sum(len(b["txt"]) for b in image_loader(root, 5, 16, shuffle=False, epochs=1, num_workers=0))


def test_tars_added_after_indexing_are_indexed_when_next_opened(downloading, capsys):
    assert _loaded(downloading) == 10
    capsys.readouterr()
    for shard in (2, 3):
        _shard(downloading, f"{shard:05d}.tar", [f"{shard}_{i}" for i in range(5)], 10 * shard)
    assert _loaded(downloading) == 20
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[index]")]
    assert len(said) == 1 and "changed since index.json was written (new: 00002.tar, 00003.tar)" in said[0]
    assert _loaded(downloading) == 20 and "[index]" not in capsys.readouterr().err  # current again: no indexing


@pytest.mark.parametrize("change", ["rewritten", "removed", "unusable_added"])
def test_a_tar_rewritten_or_removed_is_indexed_again(downloading, change, capsys):
    index_directory(downloading, ["txt"], True)
    if change == "rewritten":  # img2dataset finishing a tar that was indexed half written
        _shard(downloading, "00001.tar", [f"1_{i}" for i in range(8)], 10)
    elif change == "removed":
        (downloading / "00001.tar").unlink()
    else:  # recorded too, though it adds no sample: no indexing at every open
        (downloading / "00002.tar").write_bytes(b"not a tar")
    expected = {"rewritten": 13, "removed": 5, "unusable_added": 10}[change]
    assert open_index(downloading).total == expected and "[index]" in capsys.readouterr().err
    assert open_index(downloading).total == expected and "[index]" not in capsys.readouterr().err


def test_a_copied_data_set_whose_times_changed_is_not_indexed_again(downloading, capsys):
    """`cp` without -p, a tar round trip (whole seconds) or a sync changes every mtime of an unchanged data set:
    it was decoded again in full, or refused on a read-only mount."""
    index_directory(downloading, ["txt"], True)
    capsys.readouterr()
    for tar in downloading.glob("*.tar"):
        os.utime(tar, ns=(0, 10**18))
    assert open_index(downloading).total == 10 and "[index]" not in capsys.readouterr().err


def test_reindexing_keeps_the_options_of_the_first_indexing(downloading):
    with wds.TarWriter(str(downloading / "00002.tar")) as sink:
        sink.write({"__key__": "mute", "jpg": jpeg_bytes((16, 16), 1)})  # no txt: kept only without require
    index_directory(downloading, [], require_media=True, decode=False)
    _shard(downloading, "00003.tar", ["3_0"])
    index = open_index(downloading)
    assert index.total == 12 and index.indexing["require"] == [] and index.indexing["decode"] is False


def test_an_index_without_the_record_still_opens_and_notices_new_tars(downloading, capsys):
    """index.json of the version before the record: the tars it lists must be there, and no other tar but those
    its report names (read, with no usable sample)."""
    (downloading / "00002.tar").write_bytes(b"not a tar")
    index_directory(downloading, ["txt"], True)
    data = json.loads((downloading / INDEX_NAME).read_text())
    del data["indexing"]
    (downloading / INDEX_NAME).write_text(json.dumps(data))
    capsys.readouterr()
    assert open_index(downloading).total == 10 and "[index]" not in capsys.readouterr().err
    _shard(downloading, "00003.tar", ["3_0"])
    assert open_index(downloading).total == 11 and "(new: 00003.tar)" in capsys.readouterr().err
    assert open_index(downloading).indexing is not None


@pytest.fixture
def make_read_only(monkeypatch):
    """Make a folder read-only as a read-only mount does. The tests run as root, whom chmod does not stop, so the
    first write indexing tries (creating the lock, or its mark) also fails with EROFS, as on such a mount."""
    import errno
    import pathlib

    from megadalle.data.ingest import first_use

    folders = []

    def refuse(path):
        if any(pathlib.Path(path).parent == root for root in folders):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def opener(path, *args, **kwargs):
        refuse(path)
        return open(path, *args, **kwargs)

    def toucher(self, *args, **kwargs):
        refuse(self)
        return real_touch(self, *args, **kwargs)

    real_touch = pathlib.Path.touch
    monkeypatch.setattr(first_use, "open", opener, raising=False)
    monkeypatch.setattr(pathlib.Path, "touch", toucher)

    def make(root):
        folders.append(root)
        root.chmod(0o555)

    yield make
    for root in folders:
        root.chmod(0o755)


def _listing(root):
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir()}


def test_a_read_only_folder_with_a_current_index_opens_without_writing(downloading, make_read_only):
    index_directory(downloading, ["txt"], True)
    before = _listing(downloading)
    make_read_only(downloading)
    assert open_index(downloading).total == 10 and _loaded(downloading) == 10
    assert _listing(downloading) == before


def test_a_read_only_folder_that_needs_indexing_says_so(downloading, make_read_only, capsys):
    from megadalle.data.ingest import ReadOnlyShards

    make_read_only(downloading)
    with pytest.raises(ReadOnlyShards, match=f"data.shards='{downloading}': {downloading}: 2 tar shards without "
                                             r"index.json; the folder is read-only, .*run `megadalle index "):
        open_index(downloading, "data.shards")
    assert main(["index", str(downloading), "num_workers=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write into it (Read-only file system)" in err and "\n" not in err


def test_a_read_only_folder_whose_tars_changed_is_refused_naming_them(downloading, make_read_only):
    from megadalle.data.ingest import ReadOnlyShards

    index_directory(downloading, ["txt"], True)
    _shard(downloading, "00002.tar", ["2_0"])
    make_read_only(downloading)
    with pytest.raises(ReadOnlyShards, match=r"changed since index.json was written \(new: 00002.tar\); the folder "
                                             r"is read-only.*`megadalle index .*` where the folder is writable"):
        _loaded(downloading)


def _prepared(root, meta):
    """A megadalle output of 3 shards of 2 samples, with `meta` (what prepare or encode records)."""
    with ShardWriter(root, max_count=2, meta=meta) as writer:
        for i in range(6):
            writer.write({"__key__": f"{i:06d}", "jpg": jpeg_bytes((16, 16), i), "txt": f"caption {i}"})
    return root


@pytest.mark.parametrize("change, named", [("added", "new: shard-000003.tar"), ("resized", "changed: shard-000001.tar"),
                                           ("removed", "gone: shard-000001.tar")])
def test_a_megadalle_output_whose_tars_changed_is_refused_not_read_in_part(tmp_path, change, named):
    """A tar copied in beside prepare's shards was left out without a word; one cut short or removed was read
    against offsets that no longer fit. Indexing it as a folder written elsewhere would drop its meta."""
    from megadalle.data.coverage import OutputChanged

    root = _prepared(tmp_path / "shards", {"image_size": 16, "format": "jpg", "source": "/data/pics"})
    before = (root / INDEX_NAME).read_bytes()
    if change == "added":
        (root / "shard-000003.tar").write_bytes((root / "shard-000002.tar").read_bytes())
    elif change == "resized":
        with open(root / "shard-000001.tar", "ab") as tar:
            tar.write(bytes(512))
    else:
        (root / "shard-000001.tar").unlink()
    with pytest.raises(OutputChanged) as refused:
        open_index(root, "data.shards")
    message = str(refused.value)
    assert message.startswith(f"data.shards='{root}': {root}: its tars are not those its index.json lists ({named}); ")
    assert f"`megadalle prepare input=/data/pics output={root} image_size=16`" in message and "\n" not in message
    assert (root / INDEX_NAME).read_bytes() == before  # not indexed again: its meta stays


def test_a_current_megadalle_output_opens_whatever_else_lies_beside_its_shards(tmp_path):
    """A writer's hidden staging (encode's `.encode-<shard>.tar/` folder) and other files are no shards."""
    root = _prepared(tmp_path / "shards", {"format": "jpg"})
    (root / ".encode-shard-000000.tar").mkdir()
    (root / ".shard-000002.tar").write_bytes(b"staging")
    (root / "notes.txt").write_text("x")
    assert open_index(root).total == 6


def test_the_index_verb_refuses_a_finished_megadalle_output_and_keeps_its_meta(tmp_path, capsys):
    """`megadalle index` run by hand on encode's output indexed it as tars written elsewhere, dropping its grid and
    codebook sizes (which training checks the model against): refused in one line naming what to run instead;
    changed since, with the readers' refusal."""
    root = _prepared(tmp_path / "tokens", {"grid_size": 4, "vocab_size": 8, "source": "/data/img"})
    before = (root / INDEX_NAME).read_bytes()
    assert main(["index", str(root), "num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert err == (f"megadalle index: {root} is a finished megadalle encode output, indexed by its writer (index.json "
                   "with its meta: grid_size, vocab_size): it needs no `megadalle index`, which would index it as tars "
                   "written elsewhere and drop that meta; to rebuild it, rerun `megadalle encode input=/data/img "
                   f"output={root} dvae_weights=...`\n")
    (root / "shard-000003.tar").write_bytes((root / "shard-000002.tar").read_bytes())
    assert main(["index", str(root), "num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"megadalle index: {root}: its tars are not those its index.json lists (new: shard-000003")
    assert (root / INDEX_NAME).read_bytes() == before and err.count("\n") == 1


def test_a_changed_encode_split_names_the_encode_that_rebuilds_it(tmp_path):
    from megadalle.data.coverage import OutputChanged

    val = _prepared(tmp_path / "tokens" / "val", {"grid_size": 4, "vocab_size": 8, "source": "/data/img/val"})
    (val / "shard-000000.tar").unlink()
    with pytest.raises(OutputChanged, match=f"`megadalle encode input=/data/img output={tmp_path / 'tokens'} "
                                            r"dvae_weights=\.\.\.`"):
        open_index(val)


@pytest.fixture
def thumbnails(tmp_path):
    """A tar from elsewhere: three 64 px photos and a 40x40 thumbnail, which a 64 px model would enlarge."""
    root = tmp_path / "thumbs"
    root.mkdir()
    with wds.TarWriter(str(root / "00000.tar")) as sink:
        for key, size in (("a", (64, 64)), ("thumb", (40, 40)), ("b", (80, 64)), ("c", (64, 72))):
            sink.write({"__key__": key, "jpg": jpeg_bytes(size, len(key)), "txt": f"photo {key}"})
    return root


@pytest.mark.parametrize("decode", ["true", "false"])
def test_index_min_side_skips_thumbnails_as_too_small(thumbnails, decode, capsys):
    """`megadalle index min_side=` skips images below it as prepare's min_side does (undecoded: by the header);
    0, the default, keeps every size."""
    assert main(["index", str(thumbnails), "num_workers=0", f"decode={decode}", "min_side=48"]) == 0
    out = capsys.readouterr().out
    assert "kept 3 samples in 1 shards, skipped 1" in out
    assert "  skipped      1  too_small: short side below min_side=48; set a lower min_side (0 keeps every size) " \
           "to keep them" in out
    report = json.loads((thumbnails / "index-report.json").read_text())
    assert [(b["key"], b["reason"], b["detail"]) for b in report["bad"]] == \
        [("thumb", "too_small", "40x40: short side < min_side=48")]
    assert sorted(k for b in image_loader(thumbnails, 3, 64, shuffle=False, epochs=1) for k in b["key"]) == \
        ["a", "b", "c"]
    assert main(["index", str(thumbnails), "num_workers=0", f"decode={decode}"]) == 0
    assert "kept 4 samples in 1 shards, skipped 0" in capsys.readouterr().out


@pytest.mark.parametrize("sizes, kept", [({"jpg": (72, 72), "png": (20, 20)}, True),
                                          ({"jpg": (20, 20), "png": (72, 72)}, False)])
@pytest.mark.parametrize("png_first", [False, True])
@pytest.mark.parametrize("decode", ["true", "false"])
def test_min_side_judges_the_image_the_loaders_take(tmp_path, sizes, kept, png_first, decode, capsys):
    """A sample with a jpg and a png trains on its jpg (`sample_image`'s order), whichever the tar holds first:
    min_side judges that one, decoded or not."""
    import io
    import tarfile

    root = tmp_path / "two"
    root.mkdir()
    two = {"jpg": jpeg_bytes(sizes["jpg"]), "png": jpeg_bytes(sizes["png"], fmt="PNG"), "txt": b"two images"}
    members = [(f"k.{name}", two[name]) for name in (["png", "jpg", "txt"] if png_first else ["jpg", "png", "txt"])]
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in [*members, ("one.jpg", jpeg_bytes((72, 72))), ("one.txt", b"one image")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert main(["index", str(root), "num_workers=0", f"decode={decode}", "min_side=64"]) == 0
    assert f"kept {1 + kept} samples in 1 shards, skipped {int(not kept)}" in capsys.readouterr().out
    report = json.loads((root / "index-report.json").read_text())
    assert [(b["key"], b["reason"], b["detail"]) for b in report["bad"]] == \
        ([] if kept else [("k", "too_small", "20x20: short side < min_side=64")])


def test_a_folder_indexed_before_min_side_existed_is_not_read_again(thumbnails, capsys):
    """Its index records no min_side: it was indexed keeping every size, what min_side=0 does."""
    index_directory(thumbnails, ["txt"], True)
    data = json.loads((thumbnails / INDEX_NAME).read_text())
    del data["indexing"]["min_side"]
    (thumbnails / INDEX_NAME).write_text(json.dumps(data))
    assert main(["index", str(thumbnails), "num_workers=0"]) == 0
    assert "read 0 of 1 tars: 1 unchanged since the last indexing" in capsys.readouterr().out
    assert main(["index", str(thumbnails), "num_workers=0", "min_side=48"]) == 0
    assert "kept 3 samples" in capsys.readouterr().out


def test_the_loaders_count_the_images_they_upscale(thumbnails):
    """A tar from elsewhere holds what it holds: each batch marks the images enlarged to the size asked for."""
    batches = list(image_loader(thumbnails, 4, 64, shuffle=False, epochs=1))
    assert dict(zip(batches[0]["key"], batches[0]["upscaled"].tolist())) == \
        {"a": False, "thumb": True, "b": False, "c": False}
    assert int(next(iter(image_loader(thumbnails, 4, 32, shuffle=False, epochs=1)))["upscaled"].sum()) == 0


@pytest.mark.parametrize("indexed", ["beforehand", "by prepare", "with its report elsewhere"])
def test_prepare_counts_the_samples_the_index_left_out(tarwriter_shards, tmp_path, capsys, indexed):
    """prepare of img2dataset shards said `skipped 0` of samples without a caption, which indexing had left out."""
    if indexed != "by prepare":
        report = tmp_path / "elsewhere.json" if indexed == "with its report elsewhere" else None
        index_directory(tarwriter_shards, ["txt"], require_media=True, report=report)
    out = tmp_path / "out"
    assert main(["prepare", f"input={tarwriter_shards}", f"output={out}", "image_size=16", "min_side=16",
                 "num_workers=0"]) == 0
    left_out = {"left_out_by_index": 4} if indexed == "with its report elsewhere" else \
        {"bad_jpg": 1, "empty_caption": 1, "missing_field": 1, "no_media": 1}
    text = capsys.readouterr().out
    assert "kept 11 samples in 1 shards, skipped 4 in" in text
    for reason, count in left_out.items():
        listed = "does not list" if indexed == "with its report elsewhere" else "lists"
        assert f"  skipped      {count}  {reason}: {count} of them left out when {tarwriter_shards} was indexed " \
               f"(its index-report.json {listed} them)\n" in text
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == report["index_skipped"] == left_out and report["bad"] == []


def test_index_of_nothing_usable_is_one_line_exit_code_2_naming_the_report(tmp_path, capsys):
    """It was the summary plus a line on stdout and exit code 1, as prepare's was."""
    root = tmp_path / "tars"
    root.mkdir()
    with wds.TarWriter(str(root / "a.tar")) as sink:
        sink.write({"__key__": "k", "jpg": jpeg_bytes((40, 40), 1)})  # no caption
    assert main(["index", str(root), "num_workers=0"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f"megadalle index: dir='{root}': no usable input, every one skipped (1 "
                                    f"missing_field); the summary above says why, {root / 'index-report.json'} lists "
                                    "each; no index.json written")
    assert "skipped" in out and not (root / INDEX_NAME).exists()


def test_index_of_tars_holding_no_sample_says_so(tmp_path, capsys):
    root = tmp_path / "tars"
    root.mkdir()
    wds.TarWriter(str(root / "a.tar")).close()
    assert main(["index", str(root), "num_workers=0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"megadalle index: dir='{root}': no sample in it (its tars "
                                                        "hold none); no index.json written")
