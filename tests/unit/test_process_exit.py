"""How a process that ran collectives ends: its exit status is the run's, not the interpreter teardown's."""
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

from megadalle import cli
from megadalle.train import distributed

SCRIPT = textwrap.dedent("""
    import atexit, sys
    import torch.distributed as dist
    import megadalle.train.distributed as distributed
    from megadalle.train.distributed import exit_process

    close = distributed.shutdown
    distributed.shutdown = lambda: (close(), print("shut down; group open:", dist.is_initialized(), flush=True))

    class Finalized:
        def __del__(self):
            print("finalized", flush=True)

    keep = Finalized()
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    dist.all_reduce(__import__("torch").ones(3))
    atexit.register(lambda: print("atexit; group open:", dist.is_initialized(), flush=True))
    print("partial line", end="")
    exit_process(3)
""")


def test_exit_process_closes_the_group_runs_atexit_and_skips_finalization(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "rendezvous")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "partial line" in done.stdout  # stdout flushed before os._exit
    # the other handlers (wandb's) first, while the ranks still wait for each other at shutdown's barrier
    assert done.stdout.endswith("atexit; group open: True\nshut down; group open: False\n"), done.stdout
    assert "finalized" not in done.stdout  # the interpreter's finalization never ran


class Exited(Exception):
    pass


def test_the_command_leaves_through_exit_process_once_a_process_group_may_have_run(monkeypatch):
    def record(code):
        raise Exited(code)

    monkeypatch.setattr(distributed, "exit_process", record)
    monkeypatch.setattr(cli, "main", lambda to_exit: 4)
    with pytest.raises(Exited) as exited:
        cli.entry()
    assert exited.value.args == (4,)


def test_a_ctrl_c_while_a_crashed_rank_reports_its_error_leaves_the_report_whole_and_its_status(monkeypatch):
    """The Ctrl-C cut the report short and left through a KeyboardInterrupt traceback, without the rank's status."""
    import os
    import signal

    def crashed(to_exit):
        raise RuntimeError("the run's own error")

    reported = []

    def report(kind, error, trace):
        os.kill(os.getpid(), signal.SIGINT)  # a user's Ctrl-C as the traceback prints
        reported.append(str(error))

    def record(code):
        raise Exited(code)

    monkeypatch.setattr(cli, "main", crashed)
    monkeypatch.setattr(sys, "excepthook", report)
    monkeypatch.setattr(distributed, "exit_process", record)
    monkeypatch.setattr(distributed, "crashed", lambda: None)
    try:
        cli.entry()
    except KeyboardInterrupt:
        pytest.fail(f"the Ctrl-C cut the report short: {reported}")
    except Exited as exited:
        assert exited.args == (1,) and reported == ["the run's own error"]
    else:
        pytest.fail("entry() returned")


def test_a_command_without_torch_distributed_exits_plainly(monkeypatch):
    monkeypatch.delitem(sys.modules, "megadalle.train.distributed")
    monkeypatch.setattr(cli, "main", lambda to_exit: 2)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 2


def test_the_installed_command_is_entry():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="megadalle")
    assert script.value == "megadalle.cli:entry"
