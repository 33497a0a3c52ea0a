"""`prepare` on a full disk: the tar write, or the flush of its close, raised ENOSPC, a traceback that kept the hidden
temporary shard (a close that failed ran after the writers' clean-up). Now it is one line naming the shard, exit 2,
no temporary and no index.json (the output reads as unfinished), and the same command rebuilds it."""
from __future__ import annotations

import errno
import os

import pytest

from megadalle.cli import main
from megadalle.data import shards
from tests.data.conftest import jpeg_bytes


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(4):
        (root / f"im{i}.jpg").write_bytes(jpeg_bytes((64, 64), i))
        (root / f"im{i}.txt").write_text(f"picture {i}")
    return root


def full_disk(monkeypatch, method: str, shard: str) -> None:
    """TarWriter's `method` fails as on a full disk once the shard whose temporary name holds `shard` is written
    (after its own work: a close that wrote the end blocks, then failed to flush them)."""
    real = getattr(shards.TarWriter, method)

    def full(self, *args):
        real(self, *args)
        if shard in self.stream.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shards.TarWriter, method, full)


@pytest.mark.parametrize("method", ["write", "close"])
def test_a_shard_the_disk_does_not_take_is_one_line_and_leaves_nothing_that_looks_finished(
        inputs, tmp_path, capsys, monkeypatch, method):
    out = tmp_path / "out"
    args = ["prepare", f"input={inputs}", f"output={out}", "image_size=32", "shard_max_samples=2", "num_workers=0"]
    full_disk(monkeypatch, method, "shard-000001")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == (f"megadalle prepare: cannot write {out / 'shard-000001.tar'} (No space left on "
                                    f"device): free space on its disk, then rerun the same command (it rebuilds {out})")
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["shard-000000.tar", "shard-000000.tar.idx"]
    monkeypatch.undo()
    assert main(args) == 0
    assert (out / "index.json").is_file() and (out / "shard-000001.tar").is_file()


def test_another_os_error_keeps_its_traceback(inputs, tmp_path, monkeypatch):
    def broken(self, sample):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(shards.TarWriter, "write", broken)
    with pytest.raises(OSError, match="Input/output error") as failed:
        main(["prepare", f"input={inputs}", f"output={tmp_path / 'out'}", "image_size=32", "num_workers=0"])
    assert type(failed.value) is OSError  # not said as a full disk
    assert not list((tmp_path / "out").glob(".shard-*"))
