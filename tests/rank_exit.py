"""How a test's own gloo rank process leaves: meet the others, close the group, exit without teardown.

Twice in CI (2026-12-03) a rank that had finished its work and closed its group still aborted at
interpreter exit with 'terminate called without an active exception': a thread of torch's
distributed runtime was still joinable when C++ static destructors ran. Every result is written
before this is called, and the barrier means no peer still needs this rank, so skipping those
destructors (os._exit) loses nothing and makes the exit status the test's, not the runtime's.
"""
import os
import sys

import torch.distributed as dist


def leave_process_group() -> None:
    """Barrier, destroy the default group, flush, and exit 0 without running interpreter teardown."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
