"""encode beside another encode, and on a full disk. Two encodes on one output (other dVAEs) shared the staging
folder: one published the other's codes under its own record, and index.json with them, rc 0. A full disk gave
tarfile's traceback and left the staging folder in the output."""
import errno
import socket

import pytest

from megadalle.cli import main
from megadalle.data.shards import ShardWriter
from megadalle.models.dvae import DVAE
from megadalle.weights import save_weights
from tests.lock_holder import held_by_another_process


@pytest.fixture(scope="module")
def weights(tmp_path_factory, small_dvae_config):
    path = tmp_path_factory.mktemp("dvae") / "dvae.safetensors"
    save_weights(path, DVAE(small_dvae_config).state_dict(), kind="dvae", config=small_dvae_config)
    return path


def test_a_second_encode_on_a_busy_output_is_refused_before_touching_it(tmp_path, image_shards, weights, capsys,
                                                                        monkeypatch):
    out = tmp_path / "tok"
    args = ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={out}", "device=cpu"]
    assert main(args) == 0
    capsys.readouterr()
    with held_by_another_process(out, "encode") as pid:
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        monkeypatch.setattr("megadalle.encode.load_dvae", lambda *a, **k: pytest.fail("the dVAE was read"))
        assert main(args) == 2
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert capsys.readouterr().err == (f"megadalle encode: output={out} is in use by an encode (host "
                                       f"{socket.gethostname()}, pid {pid}); wait for it to end or stop it, or give "
                                       "another output=; if that process is gone (NFSv3 keeps a dead node's lock "
                                       f"until it reboots), remove {out / '.lock'}\n")


def test_the_ranks_of_a_split_encode_share_the_output_and_a_single_encode_is_refused(tmp_path, image_shards, weights,
                                                                                      capsys, monkeypatch):
    out = tmp_path / "tok"
    args = ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={out}", "device=cpu"]
    with held_by_another_process(out, "encode", shared=True):  # rank 1 of 2, still encoding
        assert main(args) == 2
        assert "is in use by an encode" in capsys.readouterr().err
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(args) == 0
        assert "rank 0 of 2: its shards of" in capsys.readouterr().err


def test_encode_on_a_full_disk_says_so_in_one_line_and_removes_its_staging(tmp_path, image_shards, weights, capsys,
                                                                          monkeypatch):
    out = tmp_path / "tok"
    args = ["encode", f"dvae_weights={weights}", f"input={image_shards}", f"output={out}", "device=cpu",
            "batch_size=4"]
    write, calls = ShardWriter.write, []

    def full_at_the_20th(self, sample):  # the second shard, half written
        calls.append(1)
        if len(calls) == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, sample)

    monkeypatch.setattr(ShardWriter, "write", full_at_the_20th)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"megadalle encode: cannot write {out / 'shard-000001.tar'} (No space left on "
                                    "device): free space on its disk, then rerun the same command (it encodes only "
                                    "the shards not done yet)")
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "shard-000000.tar", "shard-000000.tar.encoded.json",
                                                      "shard-000000.tar.idx"]
    monkeypatch.setattr(ShardWriter, "write", write)
    assert main(args) == 0
    assert (out / "index.json").is_file() and not list(out.glob(".encode-*"))
