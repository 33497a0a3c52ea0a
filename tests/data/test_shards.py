"""Shard writer (atomic, limits, index) and readers (field-wise, never unpickling)."""
from __future__ import annotations

import io
import json
import pickle
import resource
import tarfile

import numpy as np
import pytest
import webdataset as wds

from megadalle.data.fields import UnsafeFieldError
from megadalle.data.index import load_offsets, offsets_path, scan_offsets
from megadalle.data.shards import (SampleReader, ShardIndex, ShardWriter, combine, index_directory, iter_samples, iter_shard,
                                   verify)


def sample(i: int) -> dict:
    return {"__key__": f"{i:06d}", "txt": f"caption {i}", "json": {"i": i}, "codes.npy": np.full((2, 3), i, np.uint16)}


def test_count_limit_and_index(tmp_path):
    with ShardWriter(tmp_path, max_count=4) as w:
        for i in range(10):
            w.write(sample(i))
    index = ShardIndex.load(tmp_path)
    assert [s.count for s in index.shards] == [4, 4, 2]
    assert index.total == 10 and index.fields == ["codes.npy", "json", "txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"] + [
        f"shard-00000{i}.tar{idx}" for i in range(3) for idx in ("", ".idx")]
    got = list(iter_samples(tmp_path))
    assert [s["txt"] for s in got] == [f"caption {i}" for i in range(10)]
    assert got[7]["json"] == {"i": 7} and got[7]["codes.npy"].dtype == np.uint16 and got[7]["codes.npy"].shape == (2, 3)


def test_size_limit(tmp_path):
    with ShardWriter(tmp_path, max_bytes=8 * 1024) as w:
        for i in range(6):
            w.write({"__key__": f"{i:03d}", "bin.npy": np.zeros(3000, np.uint8)})
    index = ShardIndex.load(tmp_path)
    assert len(index.shards) > 1 and index.total == 6
    # the limit counts the members written (tar's end-of-archive padding comes on top)
    assert all(s.count <= 2 for s in index.shards)


def test_readable_by_webdataset(tmp_path):
    with ShardWriter(tmp_path) as w:
        for i in range(3):
            w.write(sample(i))
    got = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in got] == ["000000", "000001", "000002"]
    assert got[1]["txt"] == b"caption 1"


def test_identical_inputs_give_identical_shards(tmp_path):
    for run in ("a", "b"):
        with ShardWriter(tmp_path / run) as w:
            for i in range(5):
                w.write(sample(i))
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "b/shard-000000.tar").read_bytes()
    assert ShardIndex.load(tmp_path / "a").fingerprint == ShardIndex.load(tmp_path / "b").fingerprint


def test_no_index_until_close_and_no_partial_shard(tmp_path):
    w = ShardWriter(tmp_path, max_count=3)
    for i in range(4):
        w.write(sample(i))
    assert not (tmp_path / "index.json").exists()
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar"]  # the open one is hidden
    w.abort()
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardIndex.load(tmp_path)


def test_a_full_disk_aborts_with_one_error_and_no_temporary(tmp_path):
    """The write that fails is the error raised; finishing the shard off in `abort` would fail again on top of it
    (a chained second traceback) and keep the temporary."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))  # a file-size limit: writes past it fail (EFBIG)
    try:
        with pytest.raises(OSError, match="File too large") as raised:
            with ShardWriter(tmp_path) as w:
                w.write({"__key__": "big", "bin": bytes(1 << 17)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.__context__ is None
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_with_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path) as w:
            w.write(sample(0))
            raise RuntimeError("crash")
    assert not (tmp_path / "index.json").exists() and not list(tmp_path.iterdir())


def test_rewrite_removes_stale_shards(tmp_path):
    with ShardWriter(tmp_path, max_count=2) as w:
        for i in range(7):
            w.write(sample(i))
    with ShardWriter(tmp_path, max_count=2) as w:
        for i in range(3):
            w.write(sample(i))
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [
        "shard-000000.tar", "shard-000000.tar.idx", "shard-000001.tar", "shard-000001.tar.idx"]
    assert ShardIndex.load(tmp_path).total == 3


def test_bad_keys_rejected(tmp_path):
    with ShardWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="without dots"):
            w.write({"__key__": "a.b", "txt": "x"})
        w.write({"__key__": "a", "txt": "x"})
        with pytest.raises(ValueError, match="duplicate"):
            w.write({"__key__": "a", "txt": "y"})


def test_random_access_reader(tmp_path):
    with ShardWriter(tmp_path, max_count=3) as w:
        for i in range(8):
            w.write(sample(i))
    reader = SampleReader(ShardIndex.load(tmp_path), max_open=1)
    for i in (7, 0, 4, 3, 7):
        got = reader.read(i, ["txt", "codes.npy"])
        assert got["__key__"] == f"{i:06d}" and got["txt"] == f"caption {i}" and int(got["codes.npy"][0, 0]) == i
    with pytest.raises(KeyError, match="no field 'jpg'"):
        reader.read(0, ["jpg"])
    reader.close()


def test_offset_files_match_a_scan_and_are_optional(tmp_path):
    with ShardWriter(tmp_path, max_count=5) as w:
        for i in range(8):
            w.write(sample(i))
    for path in ShardIndex.load(tmp_path).paths():
        assert np.array_equal(load_offsets(path), scan_offsets(path)[0])
        offsets_path(path).unlink()
    reader = SampleReader(ShardIndex.load(tmp_path))  # falls back to scanning the headers
    assert [reader.read(i, ["txt"])["txt"] for i in (6, 2)] == ["caption 6", "caption 2"]


def test_changed_shard_is_detected(tmp_path):
    with ShardWriter(tmp_path, max_count=3) as w:
        for i in range(6):
            w.write(sample(i))
    index = ShardIndex.load(tmp_path)
    data = json.loads((tmp_path / "index.json").read_text())
    data["shards"][0]["count"] = 2
    data["shards"][1]["count"] = 4
    (tmp_path / "index.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="changed after the index"):
        SampleReader(ShardIndex.load(tmp_path)).read(0, ["txt"])
    assert index.fingerprint != ShardIndex.load(tmp_path).fingerprint


def test_write_index_for_foreign_shards(tmp_path):
    for n, keys in enumerate([["a", "b"], ["c"]]):
        with tarfile.open(tmp_path / f"x{n}.tar", "w") as tar:
            for key in keys:
                for field, data in (("txt", key.encode()), ("cls", b"1")):
                    info = tarfile.TarInfo(f"{key}.{field}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    index = index_directory(tmp_path).index
    assert [s.count for s in ShardIndex.load(tmp_path).shards] == [2, 1] and index.fields == ["cls", "txt"]


class _CreatesFile:
    """Unpickling this object creates `path`: the proof that something unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("field", ["pyd", "pickle", "pkl"])
def test_pickle_member_is_never_unpickled(tmp_path, field):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(marker))
    root = tmp_path / "shards"
    root.mkdir()
    with tarfile.open(root / "shard-000000.tar", "w") as tar:  # a hostile shard: sample 001 carries a pickle
        for i in range(3):
            members = [("txt", f"cap {i}".encode())] + ([(field, payload)] if i == 1 else [])
            for name, data in members:
                info = tarfile.TarInfo(f"{i:03d}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    index_directory(root)
    assert [s["txt"] for s in iter_samples(root, ["txt"])] == ["cap 0", "cap 1", "cap 2"]
    index = ShardIndex.load(root)
    assert SampleReader(index).read(1, ["txt"])["txt"] == "cap 1"
    with pytest.raises(UnsafeFieldError, match="unpickling"):
        list(iter_shard(root / "shard-000000.tar"))  # asking for every field refuses the pickle
    with pytest.raises(UnsafeFieldError):
        SampleReader(index).read(1, [field])
    assert not marker.exists()
    pickle.loads(payload)  # the payload really is live: unpickling creates the file
    assert marker.exists()


def test_object_arrays_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with ShardWriter(tmp_path) as w:
        w.write({"__key__": "k", "evil.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="allow_pickle"):
        list(iter_samples(tmp_path, ["evil.npy"]))


def test_verify_finds_damage(tmp_path):
    with ShardWriter(tmp_path, max_count=3) as w:
        for i in range(7):
            w.write(sample(i))
    assert verify(tmp_path, ["txt", "json", "codes.npy"]) == []
    (tmp_path / "shard-000002.tar").unlink()
    data = (tmp_path / "shard-000001.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(data[:1500])
    assert verify(tmp_path) == ["shard-000001.tar: 1500 bytes, index.json says 10240", "shard-000002.tar: missing"]


def test_combine_rank_directories(tmp_path):
    for rank in range(2):
        with ShardWriter(tmp_path / f"part-{rank}", max_count=2, meta={"grid": 4}) as w:
            for i in range(3):
                w.write(sample(10 * rank + i))
    index = combine(tmp_path, [tmp_path / "part-0", tmp_path / "part-1"])
    assert [s.name for s in index.shards] == ["part-0/shard-000000.tar", "part-0/shard-000001.tar",
                                              "part-1/shard-000000.tar", "part-1/shard-000001.tar"]
    assert [s["txt"] for s in iter_samples(tmp_path, ["txt"])] == [f"caption {i}" for i in (0, 1, 2, 10, 11, 12)]
    assert SampleReader(ShardIndex.load(tmp_path)).read(4, ["txt"])["txt"] == "caption 11"
    assert ShardIndex.load(tmp_path).meta == {"grid": 4} and verify(tmp_path) == []
    with pytest.raises(ValueError):
        combine(tmp_path / "part-0", [tmp_path / "part-1"])


def _publish_many(path, writer):
    from megadalle.data import atomic

    for i in range(300):
        atomic.write_json(path, {"writer": writer, "i": i})


def test_processes_publishing_one_file_at_once_never_fail(tmp_path):
    """The ranks of a split encode each write the finished index.json: with one shared temporary name one
    process renamed it from under another, which failed with FileNotFoundError."""
    import json
    import multiprocessing

    path = tmp_path / "index.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_publish_many, args=(path, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert json.loads(path.read_text())["i"] == 299 and not list(tmp_path.glob(".*.tmp"))


def test_a_publish_that_fails_leaves_no_temporary_behind(tmp_path):
    """Writing over a folder fails at the rename: the hidden `.NAME.<pid>-<hex>.tmp` used to stay."""
    from megadalle.data import atomic

    (tmp_path / "tokenizer.model").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic.write_bytes(tmp_path / "tokenizer.model", b"pieces")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.model"]


def test_a_write_past_a_full_disk_leaves_no_temporary_behind(tmp_path):
    """The bytes themselves do not fit (EFBIG here, ENOSPC on a full disk): `.run.json.<pid>-<hex>.tmp` stayed,
    since the write failed before `publish`, which removes it."""
    from megadalle.data import atomic

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            atomic.write_bytes(tmp_path / "run.json", bytes(1 << 17))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []
