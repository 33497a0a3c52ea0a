"""How a test's own gloo rank process leaves: meet the others, close the group, exit without teardown.

Twice in CI (2026-12-03) a rank that had finished its work and closed its group still aborted at
interpreter exit with 'terminate called without an active exception': a thread of torch's
distributed runtime was still joinable when C++ static destructors ran. Every result is written
before this is called, and the barrier means no peer still needs this rank, so skipping those
destructors (os._exit) loses nothing and makes the exit status the test's, not the runtime's.
"""
import os
import sys

from megadalle.train.distributed import shutdown


def leave_process_group() -> None:
    """The trainer's own `shutdown` (barrier, then destroy the group), a flush, and exit 0 without teardown."""
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
