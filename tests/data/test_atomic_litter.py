"""What a writer killed between its write and its rename leaves (`.NAME@<host>-<pid>.<start>-<hex>.tmp`, as large as the
file it wrote) is removed by the next write into that folder, when its writer was a process of this host that has
ended; a live writer's, and one whose writer cannot be judged from here, stay. Before, nothing ever removed it."""
import os
import socket
import subprocess
import sys

from megadalle.cli import main
from megadalle.data import atomic
from megadalle.data.split import check_split_dir
from megadalle.processes import owner_tag


def dead_pid() -> int:
    """The pid of a process that has ended (started and reaped here): no process of this host has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant(folder, name: str) -> str:
    (folder / name).write_bytes(b"half a model")
    return name


def test_a_write_removes_what_a_dead_local_writer_left_and_keeps_the_rest(tmp_path):
    host = socket.gethostname()
    dead = plant(tmp_path, f".x.model@{host}-{dead_pid()}-abcd1234.tmp")
    dead_other_file = plant(tmp_path, f".index.json@{host}-{dead_pid()}-0a1b2c3d.tmp")
    start = int(owner_tag().rpartition(".")[2])
    predecessor = plant(tmp_path, f".x.model@{host}-{os.getpid()}.{start - 1}-abcd1234.tmp")  # a restarted container's
    kept = {plant(tmp_path, f".x.model@{host}-{os.getpid()}-abcd1234.tmp"),  # a live writer, this process
            plant(tmp_path, f".x.model@{owner_tag()}-0a1b2c3d.tmp"),  # the same, named with its start
            # other hosts: their writers' pids say nothing of processes here, a host whose name ends in this one's too
            plant(tmp_path, f".x.model@{host}-elsewhere-{dead_pid()}-abcd1234.tmp"),
            plant(tmp_path, f".x.model@gpu1.{host}-{dead_pid()}-abcd1234.tmp"),
            plant(tmp_path, f".x.model.{dead_pid()}-abcd1234.tmp"),  # named before names held the host
            plant(tmp_path, f"x.model@{host}-{dead_pid()}-abcd1234.tmp")}  # not hidden: not a temporary of replacing
    atomic.write_bytes(tmp_path / "x.model", b"model")
    names = {p.name for p in tmp_path.iterdir()}
    assert dead not in names and dead_other_file not in names and predecessor not in names
    assert names == kept | {"x.model"}
    assert (tmp_path / "x.model").read_bytes() == b"model"


def test_the_tokenizer_verb_removes_the_temporary_its_killed_run_left(caption_shards, tmp_path, capsys):
    """The hunt's repro: `megadalle tokenizer` killed while publishing the model, then rerun."""
    plant(tmp_path, f".tok.model@{socket.gethostname()}-{dead_pid()}-4a61095c.tmp")
    assert main(["tokenizer", f"input={caption_shards}", f"output={tmp_path / 'tok.model'}", "vocab_size=64"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.model"]


def test_a_split_folder_with_a_killed_writers_temporary_is_still_prepares_own(tmp_path):
    """prepare replaces its earlier `val/` only when it holds megadalle's files alone: the temporaries with the
    writer's host in their names are among them, as those named before were."""
    for name in (f".index.json@{owner_tag()}-0a1b2c3d.tmp", f".index.json@{socket.gethostname()}-123-0a1b2c3d.tmp",
                 ".report.json.123-0a1b2c3d.tmp", "index.json"):
        plant(tmp_path, name)
    check_split_dir(tmp_path)


def test_a_folder_that_cannot_be_listed_is_written_all_the_same(tmp_path, monkeypatch):
    """The clean-up is a courtesy: a folder this process may write but not list (a drop box, an NFS root squash, a
    stale handle) failed the write that followed it."""
    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refused)
    atomic.write_bytes(tmp_path / "x.model", b"model")
    assert (tmp_path / "x.model").read_bytes() == b"model"
