"""Whether a process named in a leftover file's name still runs (temporaries of killed exports and conversions)."""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True when a process `pid` exists on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # alive, another user's
        pass
    return True
