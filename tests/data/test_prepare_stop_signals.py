"""A scheduler's TERM or USR1 stops `prepare` as Ctrl-C does: its writers clean up, its workers end, one line, and
exit 75 (rerun the same command). TERM's default action had ended it where it stood, with 143 and nothing said."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from megadalle.cli import main
from megadalle.train.signals import STOPPED_EXIT
from tests.data.conftest import jpeg_bytes
from tests.data.prepare_inputs import put

SLOW_PREPARE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from megadalle.cli import main
    from megadalle.data import prepare

    real = prepare.convert

    def slow(item, opts):
        Path(sys.argv[1]).touch()  # a worker converts
        time.sleep(0.05)
        return real(item, opts)

    prepare.convert = slow
    sys.exit(main(["prepare", *sys.argv[2:]]))
""")


def images(root, count: int) -> None:
    for i in range(count):
        put(root, f"{i:04d}.jpg", jpeg_bytes((40, 40), i), f"picture {i}")


def stop_line(sig: signal.Signals, out) -> str:
    return (f"megadalle prepare: stopped by {sig.name}; rerun to rebuild {out} (it has no index.json, so no reader "
            "takes it for finished)")


@pytest.mark.parametrize("sig, whole_group", [(signal.SIGTERM, True), (signal.SIGTERM, False),
                                              (signal.SIGUSR1, False)],
                         ids=["TERM to every process (Slurm)", "TERM to prepare (timeout, kill)", "USR1"])
def test_a_stop_signal_while_the_workers_convert_ends_prepare_with_one_line_and_75(tmp_path, sig, whole_group):
    root, out, started = tmp_path / "in", tmp_path / "out", tmp_path / "started"
    images(root, 200)
    args = [f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=2", "shard_max_samples=20"]
    child = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, str(started), *args], stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "prepare never started converting"
        time.sleep(0.5)  # shards are being written
        (os.killpg if whole_group else os.kill)(child.pid, sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    assert child.returncode == STOPPED_EXIT, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == stop_line(sig, out)
    assert not (out / "index.json").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tar") or ".tmp" in p.name) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)  # no worker outlived it


def test_a_signal_that_lands_in_prepare_itself_is_its_line_and_75(tmp_path, monkeypatch, capsys):
    """In-process, where the signal meets the conversion loop of the main process (num_workers=0)."""
    from megadalle.data import prepare as prepare_module

    root, out = tmp_path / "in", tmp_path / "out"
    images(root, 6)
    real, calls = prepare_module.convert, []

    def signalled(item, opts):
        calls.append(item)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        return real(item, opts)

    def unheld(signum, frame):
        raise AssertionError("TERM reached the handler from before the command: prepare held none")

    monkeypatch.setattr(prepare_module, "convert", signalled)
    before = signal.signal(signal.SIGTERM, unheld)
    try:
        status = main(["prepare", f"input={root}", f"output={out}", "image_size=32", "min_side=32", "num_workers=0"])
        assert signal.getsignal(signal.SIGTERM) is unheld  # given back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert status == STOPPED_EXIT and len(calls) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == stop_line(signal.SIGTERM, out)
    assert not (out / "index.json").exists() and not list(out.glob("*.tar"))
