"""prepare's and indexing's worker pool stops its workers, whatever the caller did to SIGTERM."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LEAVE_A_BUSY_POOL = """
import signal, sys, time
if sys.argv[1] == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
from megadalle.data.pool import worker_pool
with worker_pool(2) as pool:
    busy = pool.map_async(time.sleep, [60, 60])
    time.sleep(1)
"""


def test_leaving_the_pool_ends_busy_workers_in_a_process_that_ignores_sigterm():
    """Leaving a pool terminates its workers with SIGTERM. A worker that inherited SIG_IGN (from `nohup`-like
    wrappers, or from a process that had stopped a training run) and had not read the pool's stop message (busy,
    or stuck) never ended: prepare finished its work and then waited forever (CI hung on it)."""
    for caller in ("default", "ignored"):
        done = subprocess.run([sys.executable, "-c", LEAVE_A_BUSY_POOL, caller], cwd=ROOT, capture_output=True,
                              text=True, timeout=40)
        assert done.returncode == 0, done.stderr[-3000:]
