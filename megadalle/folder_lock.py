"""An exclusive hold of one process on a folder it writes: train's run directory (train/rundir.py), prepare's and
encode's output.

The hold is a `flock` on `<folder>/.lock`, taken before the process reads or writes anything there and kept until it
ends. Two processes writing one folder at once would otherwise mix their files: runs resumed from each other's
checkpoints; two encodes with other dVAEs published one's codes under the other's record, two prepares at other
sizes one index.json over a tar of both. The second is refused, naming the holder (run, prepare or encode; host,
pid, Slurm job). The kernel drops the lock when its process dies, however it dies, so a rerun (on this node or
another) finds it free once the old one is gone. A flock belongs to the open file, which a forked child (a
DataLoader worker, a prepare worker) shares: an orphaned worker outliving a killed run held it for seconds more, so
every forked child closes its copy at once (`os.register_at_fork`). Not POSIX record locks (`lockf`), which a fork
does not pass on: a process holds those once, so a second lock in the same process would succeed, and closing any
descriptor of the file drops them. On NFS the Linux client emulates flock with whole-file POSIX locks held by the
server (since 2.6.12; mount option `local_lock=none`, the default): it still excludes across nodes, a lock whose
process died is released, and one whose node died stays until the server drops it (the NFSv4 lease, about 90 s;
NFSv3 waits for the node to reboot). A mount with `nolock` or `local_lock=flock|all` keeps locks node-local: jobs on
two nodes both take it.

A shared hold (`shared=True`) is for the processes of one job that write one folder together (a split encode): they
hold it side by side, and exclude any single process that wants it alone, and the processes of another job: the lock
file records the job (`job_of`: Slurm job, torchrun run id, or rendezvous address), written once by its first taker.

The lock locks the file, not the path: a folder renamed or removed under its holder leaves it holding the lock of a
file no path leads to, while a path-based writer would recreate the folder, unlocked (`lost`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Mapping

from megadalle.errors import UserError

LOCK = ".lock"

_HELD: set["FolderLock"] = set()
"""The locks this process holds, for `_forget_in_child` and `held_on`."""


def _forget_in_child() -> None:
    """In a forked child: close the copies of the locks' descriptors, so that a lock ends with the process that
    took it, and forget them (the child's `release` must not unlock its parent's lock)."""
    for lock in list(_HELD):
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class FolderLock:
    """The hold of one process on `folder` (the module docstring says why and how).

    The lock file stays after a release: removing it would let a third process lock a new file while a second
    still holds the old one. Its text names the last holder, for the message of a process refused while it lives."""

    def __init__(self, folder: Path | None, error: type[UserError], name: str, instead: str, who: str,
                 environ: Mapping[str, str] | None = None, shared: bool = False):
        """Take the lock of `folder` (None: hold nothing, as the ranks of a run other than 0 do). Refused: raise
        `error`, naming the folder as `name` ("output=<path>"), the holder, and `instead`, what else to do ("give
        another output="). `who` names the holder kind in its record and in the warning of a file system that
        cannot lock ("run", "prepare")."""
        self.fd: int | None = None
        self.folder = folder
        if folder is None:
            return
        lock = folder / LOCK
        try:  # 0o666: the umask decides, so that a group sharing a folder (umask 002) shares its lock file too
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError as err:  # refused, as any write of the folder would be: no traceback
            raise error(f"cannot open {lock} ({os.strerror(err.errno)}): another user made it, or the folder is not "
                        f"writable for you; have it made writable for you (chmod g+w) or {instead}") from None
        record = holder_text(who, environ) + (f"\njob {job_of(environ)}" if shared else "")
        try:
            held = _take_shared(fd, record) if shared else _take(fd, record)
        except OSError as err:  # a file system without flock (Lustre mounted noflock, some FUSE): go on unlocked
            os.close(fd)
            print(f"[{who}] {lock}: this file system cannot lock ({os.strerror(err.errno)}): this {who} goes "
                  f"on unlocked, and a second one started on {folder} would not be refused", file=sys.stderr)
            return
        if not held:
            holder = _read(fd).partition("\n")[0].strip() or "a process that has not written its name"
            os.close(fd)
            raise error(f"{name} is in use by {holder}; wait for it to end or stop it, or {instead}; if that process "
                        f"is gone (NFSv3 keeps a dead node's lock until it reboots), remove {lock}")
        self.fd = fd
        _HELD.add(self)

    def release(self) -> None:
        """Let the next process in; safe to call more than once. Unlocked, not only closed: a child forked in C, not
        through os.fork (whose children `_forget_in_child` covers), would share the open file and keep it locked."""
        _HELD.discard(self)
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def lost(self) -> bool:
        """Whether `folder`'s lock file is no longer the file this process locked: the folder was renamed or
        removed (and maybe made again) since. False when nothing is held."""
        if self.fd is None:
            return False
        try:
            now = os.stat(self.folder / LOCK)
        except OSError:
            return True
        held = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_on(folder: Path) -> FolderLock | None:
    """The lock this process holds on `folder` (by the path it was taken with), or None."""
    return next((lock for lock in _HELD if lock.folder == folder), None)


def job_of(environ: Mapping[str, str] | None = None) -> str:
    """The job a process of a split encode belongs to, the same on all its ranks and another for another job: the
    Slurm job, else the torchrun run id, else the rendezvous address ("" outside a launcher)."""
    env = os.environ if environ is None else environ
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        if env.get(key):
            return env[key]
    return f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}".strip(":")


SHARED_WAIT_S = 2.0
"""How long a shared taker waits out an exclusive hold, which may be the first taker of its own job writing the
job's record (microseconds) rather than another process holding the folder."""


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")


def _take(fd: int, record: str) -> bool:
    """Hold the lock alone and write `record`; False when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return True


def _take_shared(fd: int, record: str) -> bool:
    """Hold the lock beside the other processes of `record`'s job; False when another job, or a single process,
    holds it. The first taker writes the job's record holding the lock alone, then shares it; a later one joins
    without writing, once the record names its job. A record left by a job that ended since (read between its
    last release and this taker's hold) is found stale by taking the lock alone."""
    job = record.rpartition("\njob ")[2]
    deadline = time.monotonic() + SHARED_WAIT_S
    stale_checked = False
    while True:
        if _take(fd, record):
            try:  # a conversion, not atomic: another taker may get in between, and this one tries again
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held alone: by a single process, or by this job's first taker writing its record
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
            continue
        if _read(fd).rpartition("\njob ")[2] == job:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        if stale_checked:
            return False
        stale_checked = True


def holder_text(who: str, environ: Mapping[str, str] | None = None) -> str:
    """Who holds a lock, as its refusal names it: the holder kind (`who`: an encode refuses a prepare naming the
    encode), host, pid, and the Slurm job when there is one."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    article = "an" if who[:1] in "aeiou" else "a"
    return (f"{article} {who} (host {socket.gethostname()}, pid {os.getpid()}" + (f", Slurm job {job}" if job else "")
            + ")")


def output_lock(output: str | Path, verb: str, environ: Mapping[str, str] | None = None,
                shared: bool = False) -> FolderLock:
    """`verb`'s (prepare's, encode's) hold on its `output` folder, made if need be; refused in one line naming the
    holder."""
    folder = Path(str(output))
    folder.mkdir(parents=True, exist_ok=True)
    return FolderLock(folder, OutputInUse, f"output={output}", "give another output=", verb, environ, shared)


class OutputInUse(UserError):
    """An output folder another process is writing."""
