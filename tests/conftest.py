"""Shared test set-up: CPU-only, deterministic, GPU tests skipped where no GPU is present."""
import os
import re
import signal
import sys
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton reads this when a kernel is decorated, so it must be set before any test imports kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc: the parent is the 4th field of /proc/PID/stat)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def pytest_sessionfinish(session, exitstatus):
    """Kill what the tests left running: a leftover child holds the output pipe open, and CI, waiting for it,
    then ran into its time limit long after the tests had finished (a pool worker orphaned by a timed-out test).
    wandb's service, started by in-process runs, and multiprocessing's fork server and resource tracker are first
    closed the way they close at exit."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    if "multiprocessing.forkserver" in sys.modules:  # the rank server of tests/distributed/dist_launch.py
        sys.modules["multiprocessing.forkserver"]._forkserver._stop()
        sys.modules["multiprocessing.resource_tracker"]._resource_tracker._stop()
    left = {pid: command(pid) for pid in descendants(os.getpid())}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        print(f"\nconftest: killed {len(left)} processes the tests left running: {left}")


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


TESTS = Path(__file__).parent
PROCESSES = "processes"
"""The xdist scope (pytest.ini's `-n 2`) of the tests that start processes of their own on several cores (gloo
ranks, launchers, a Slurm cluster on localhost, sshd): one worker runs them one after another, as a run without
workers would, while the other takes the in-process tests file by file (each file on one worker, its module
fixtures built once). Two of them at once would fight for the 2 cores, the ports and the one Slurm cluster."""
PROCESS_FOLDERS = ("distributed", "slurm")
PROCESS_MARKS = re.compile(r"mark\.(distributed|slurm)\b")


@lru_cache(maxsize=None)
def starts_processes(path: str) -> bool:
    """Whether the test file at `path` (relative to the repository, as in a test's id) is one of PROCESSES: in
    tests/distributed or tests/slurm, or marking a test of its own `distributed` or `slurm`. The scheduler sees
    only the tests' ids, not their marks, hence the file's text."""
    parts = Path(path).parts
    if len(parts) > 1 and parts[1] in PROCESS_FOLDERS:
        return True
    file = TESTS.parent / path
    return file.is_file() and PROCESS_MARKS.search(file.read_text()) is not None


def test_file(item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Tests scheduled by scope, one scope at a time to a worker: PROCESSES, or a test's file."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFileAndProcesses(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return PROCESSES if starts_processes(path) else path

    return ByFileAndProcesses(config, log)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler takes the scopes in this order
        # PROCESSES first, so that a worker starts on them at once: a third of the suite's time, started last they
        # would run on alone after the rest. Stable: the collection's order otherwise.
        items.sort(key=lambda item: not starts_processes(test_file(item)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
PRISTINE = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
"""The launcher variables as the test run started, before any in-process training exported its own."""


@pytest.fixture(autouse=True)
def _restore_environment():
    """In-process training exports RANK, WORLD_SIZE and MASTER_* for torch.distributed; a later test that
    launches processes (srun, torchrun) would hand them a stale single-rank world. Module- and
    session-scoped fixtures train before this fixture runs, so the launcher variables are reset to their
    values at start-up, and everything else a test changes is undone after it."""
    for name, value in PRISTINE.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A test run started in the background (`pytest &` in a script, nohup) inherits Ctrl-C ignored, and so would every
    # process the tests start: the tests of what Ctrl-C does failed there. They get it as a terminal gives it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
PRISTINE_SIGNALS = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}


@pytest.fixture(autouse=True)
def _signals_left_as_found():
    """A test that leaves a stop signal handled, ignored or blocked in the test process fails (and the signal is put
    back): every later test, and every process they start, inherits it. A SIGTERM left ignored hung CI twice over:
    prepare's pool could no longer end its workers, and launch/train.sh could not trap what it must forward.
    A run stopped in the test process marks the process (signals._stopped_here, so that its exit ignores late
    copies of the signal): the mark is the test's, not the next one's, whose `cli.entry` would ignore TERM for it."""
    yield
    stopped_mark = sys.modules.get("megadalle.train.signals")
    if stopped_mark is not None:
        stopped_mark._stopped_here = False
    changed = {sig.name: signal.getsignal(sig) for sig in STOP_SIGNALS if signal.getsignal(sig) != PRISTINE_SIGNALS[sig]}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set()) & set(STOP_SIGNALS)
    for sig in STOP_SIGNALS:
        signal.signal(sig, PRISTINE_SIGNALS[sig])
    signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    if changed or blocked:
        pytest.fail(f"the test left stop signals changed: {changed or ''} {sorted(blocked) or ''}", pytrace=False)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads made a small model's step ~20x slower.
    Folders of single-process training tests use it for every test (their conftest asks for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
