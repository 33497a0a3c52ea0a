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


def started(pid: int) -> str | None:
    """When the process `pid` started, in clock ticks since the host booted (/proc/<pid>/stat's 22nd field); None
    where that cannot be read (no /proc: macOS; a process gone meanwhile; /proc mounted with hidepid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()  # the command's name, in brackets, may hold spaces
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None


def owner_tag() -> str:
    """`<host>-<pid>.<start>`, for a temporary's name: on storage shared by several nodes a pid alone names no
    process (the same number may be a live writer on another node), and on one host a pid names a process only
    with its start (`started`): a container restarted under the same host name runs its command under the same
    pid again (often 1), and took the temporaries its killed predecessor left for a live writer's, keeping them
    for good. `<host>-<pid>` where the start cannot be read."""
    start = started(os.getpid())
    return f"{socket.gethostname()}-{os.getpid()}" + (f".{start}" if start else "")


def owner_gone(tag: str) -> bool:
    """True when the `owner_tag` `tag` names a process of this host that no longer runs: its pid runs nothing, or a
    process that started at another time. Another host's writer cannot be seen from here, so its temporary is never
    taken for a dead one's; nor is one whose start cannot be compared (a tag without it, from before the tags held
    it, or a process whose start cannot be read) while its pid runs."""
    host, _, writer = tag.rpartition("-")
    pid, _, start = writer.partition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if not alive(int(pid)):
        return True
    now = started(int(pid)) if start.isdigit() else None
    return now is not None and now != start
