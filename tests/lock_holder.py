"""Another process holding an output folder's lock (folder_lock.output_lock), as a running prepare or encode does:
a flock is per open file, so only a second process shows what a second run of a verb meets."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

HOLDER = """
import sys, time
from megadalle.folder_lock import output_lock
lock = output_lock(sys.argv[1], sys.argv[2], shared=sys.argv[3] == "shared")
print("held", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def held_by_another_process(folder: Path, verb: str, shared: bool = False) -> Iterator[int]:
    """Within it, another process holds `verb`'s lock on `folder` (`shared`: as a rank of a split encode); yields its
    pid."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), verb, "shared" if shared else "alone"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
