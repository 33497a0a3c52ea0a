"""A preemption while a training verb indexes its data: the whole Slurm step gets TERM, which kills the indexing
pool's workers (their tasks are lost: the pool's results never come) but not the verb, which holds TERM from its
start to stop cleanly. It waited for the lost results forever; it now stops at once with exit 75 (requeued)."""
import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

from megadalle.cli import execute
from megadalle.data.ingest.folder import IndexingStopped
from megadalle.train.signals import STOPPED_EXIT

SLOW_WORKERS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from megadalle.data.ingest import folder

    real, reading = folder.index_shard, Path(sys.argv[1])

    def slow(path, **options):
        reading.touch()  # a worker reads a tar
        time.sleep(2)  # the test's TERM lands while the workers read, however loaded the machine
        return real(path, **options)

    folder.index_shard = slow
""")
"""Indexing whose workers tell the test (the file argv[1]) that they read, each tar taking 2 s more: a fixed wait
after the start raced the indexing's own end (~3 s of 160,000 samples here, less on a faster machine)."""

INDEX_IN_A_VERB = SLOW_WORKERS + textwrap.dedent("""
    from megadalle.data.ingest import index_directory
    from megadalle.train.signals import stop_requested, taken_at_start
    from megadalle.data.ingest.folder import IndexingStopped

    with taken_at_start():
        try:
            index_directory(sys.argv[2], require=("txt",), num_workers=2, stopped=stop_requested)
        except IndexingStopped as err:
            print(err, flush=True)
            sys.exit(75)
    sys.exit(0)
""")

INDEX_VERB = SLOW_WORKERS + textwrap.dedent("""
    from megadalle.cli import entry

    sys.argv = ["megadalle", "index", *sys.argv[2:]]
    entry()  # the installed command's own start and exit
""")


def write_tars(root, tars: int, samples: int) -> None:
    root.mkdir()
    for t in range(tars):
        with tarfile.open(root / f"{t:05d}.tar", "w") as tar:
            for i in range(samples):
                info = tarfile.TarInfo(f"{t:05d}{i:07d}.txt")
                info.size = 1
                tar.addfile(info, io.BytesIO(b"a"))


def terminated_while_reading(script: str, reading, *args, **popen) -> tuple[subprocess.Popen, str]:
    """Runs `script` with the file `reading` and `args`; once a worker reads, TERM to every process of its group,
    what Slurm does to a step. The child and the output it then ends with."""
    child = subprocess.Popen([sys.executable, "-c", script, str(reading), *map(str, args)], text=True,
                             start_new_session=True, **popen)
    deadline = time.monotonic() + 120
    while not reading.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reading.exists(), child.communicate()
    os.killpg(child.pid, signal.SIGTERM)
    try:
        return child, child.communicate(timeout=60)[0 if child.stdout else 1]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise AssertionError("indexing waited for the results of the workers TERM had killed") from None


def test_a_term_to_the_whole_process_group_while_indexing_stops_it(tmp_path):
    root = tmp_path / "shards"
    write_tars(root, tars=4, samples=1000)
    child, out = terminated_while_reading(INDEX_IN_A_VERB, tmp_path / "reading", root, stdout=subprocess.PIPE)
    assert child.returncode == 75, out
    assert "stopped by signal while indexing" in out
    assert not (root / "index.json").exists()  # indexed again next time, never half-published


def test_the_cli_exits_75_with_one_line_when_a_stop_ends_the_start_up(monkeypatch, capsys):
    import megadalle.cli

    def stopped(cfg):
        raise IndexingStopped("stopped by signal while indexing x")

    monkeypatch.setattr(megadalle.cli, "resolve", lambda verb: stopped)
    monkeypatch.setattr("megadalle.preflight.preflight", lambda verb, cfg: None)
    assert execute("train", None) == STOPPED_EXIT
    assert capsys.readouterr().err == "megadalle train: stopped by signal while indexing x\n"


def test_a_term_to_the_whole_process_group_stops_megadalle_index_with_one_line_and_75(tmp_path):
    """`megadalle index` itself: TERM had ended it with 143, nothing said; the mark says the next indexing redoes it."""
    root = tmp_path / "shards"
    write_tars(root, tars=4, samples=1000)
    child, err = terminated_while_reading(INDEX_VERB, tmp_path / "reading", root, "num_workers=2",
                                          stderr=subprocess.PIPE)
    assert child.returncode == STOPPED_EXIT, err
    assert err.strip().splitlines()[-1] == "megadalle index: stopped by SIGTERM; rerun the same command to finish it"
    assert not (root / "index.json").exists()
