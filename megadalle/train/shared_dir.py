"""Whether every rank sees the run directory rank 0 chose: one folder, not a copy of its path on each node.

Every rank writes its checkpoint files into the run directory by path. On node-local storage (`run_dir=$TMPDIR/...`,
an `out_dir` on a node's own disk, a relative path from a local working folder) that path is another folder on each
node: each node's ranks wrote their shards into their own copy, rank 0 listed its node's files alone in the manifest
and published the checkpoint as complete, and the run ended "finished" with exit 0. The loss showed only at the
resume, as a damaged checkpoint with no complete one before it. So at the start rank 0 writes a file of random
name into the directory (`make_token`), every rank looks for it (`check_token`), and a rank that does not see it
stops every rank, naming itself and its host, before anything is trained.
"""
from __future__ import annotations

import socket
import uuid
from pathlib import Path

from megadalle.train import distributed

TOKEN_PREFIX = ".shared-check-"


def make_token(path: Path) -> str:
    """Rank 0, holding the run lock: the name of a new empty file in run directory `path`. Tokens a killed run
    left are removed first (only the lock's holder writes them)."""
    for stale in path.glob(f"{TOKEN_PREFIX}*"):
        stale.unlink(missing_ok=True)
    token = f"{TOKEN_PREFIX}{uuid.uuid4().hex}"
    (path / token).touch()
    return token


def check_token(path: Path, token: str, rank: int) -> str | None:
    """On every rank (a collective): the first rank's reason, in one line, when a rank does not see `token` in
    `path`, else None. Rank 0 removes the token once every rank has looked."""
    seen = (path / token).is_file()
    error = distributed.first_error(None if seen else (
        f"run_dir {path} is another folder on host {socket.gethostname()} than the one rank 0 made (the file "
        f"{token} that rank 0 wrote there is not in it): run_dir (or out_dir, where "
        f"run_dir is left to its default) must be on a file system every node shares, not on node-local storage"))
    if rank == 0:
        (path / token).unlink(missing_ok=True)
    return error
