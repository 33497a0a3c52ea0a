"""Who wrote a leftover temporary, and whether that writer still runs (temporaries of killed exports and
checkpoint conversions, as large as the model, and of any atomic write, that nothing else would ever remove)."""
from __future__ import annotations

import os
import socket


def alive(pid: int) -> bool:
    """True when a process `pid` exists on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def owner_tag() -> str:
    """`<host>-<pid>`, for a temporary's name: on storage shared by several nodes a pid alone names no process
    (the same number may be a live writer on another node)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def owner_gone(tag: str) -> bool:
    """True when the `owner_tag` `tag` names a process of this host that no longer runs. Another host's
    writer cannot be seen from here, so its temporary is never taken for a dead one's."""
    host, _, pid = tag.rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))
