"""Saving a checkpoint on every rank, and clearing away the ones a run no longer resumes from.

The order of a save is what makes it safe: every rank writes its files, rank 0 fsyncs them (durable.py), then
publishes the manifest and `latest` last, so a crash or a power loss at any point leaves either a complete
checkpoint or a directory that resume skips (checkpoint_damage.py). Each stage is a collective step
(`on_every_rank`): a failure on one rank (a full disk) stops every rank with the same line, and none waits at a
barrier for one that has left. Before a save rank 0 makes room: it sets aside the checkpoints of an abandoned
run and prunes beyond `trainer.keep_checkpoints`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from functools import partial
from pathlib import Path

import torch

from megadalle.data.atomic import temporaries
from megadalle.disk_errors import REMEDIES
from megadalle.train import distributed, ema as ema_lib, rng, rundir
from megadalle.train.checkpoint import ABANDONED, LATEST, MANIFEST, CheckpointError, one_line, step_dirs, tag_of
from megadalle.train.checkpoint_damage import complete_tags, damage
from megadalle.train.distributed import barrier
from megadalle.train.durable import atomic_write, fsync_dir, sync_tree
from megadalle.train.lineage import Lineage


def save(engine, root: Path, step: int, client_state: dict, rank: int, lineage: Lineage, ema=None,
         keep: int = 0) -> Lineage:
    """Save on every rank; rank 0 then writes the manifest, `latest`, and prunes old checkpoints.
    `client_state["layout"]` (universal.Layout's fields) and `client_state["schedule"]` (the learning-rate curve's
    trainer keys, schedule.SCHEDULE) go into the manifest too, and `lineage`
    (checkpoint_choice.choose's, or the previous save's; only rank 0's counts). Returns the lineage of the next
    save, whose parent is this one.

    With `keep`, rank 0 prunes before the save as well (never the checkpoint the run continues): a run resumed
    with a lower `trainer.keep_checkpoints` frees that disk space before it needs it, not after.

    Every file is fsynced before the manifest is written, so a checkpoint that counts as complete survives a
    power loss. A failure on any rank (a full disk) stops every rank with the same line, and the unfinished
    directory is removed: no rank waits at a barrier for one that has left. So does a run directory moved or removed
    since the run locked it (`rundir.moved_away`), before anything is written (DeepSpeed writes by path and would
    make `<old path>/checkpoints` again), or during the save, whose failure it then explains."""
    tag = tag_of(step)
    path = root / tag
    stop_if_moved(root, rank)
    try:
        on_every_rank(path, rank, partial(_make_room, root, tag, keep, lineage.parent) if rank == 0 else None,
                      remove=False)
        on_every_rank(path, rank, partial(_write, engine, path, client_state, rank, ema))
        on_every_rank(path, rank, partial(sync_tree, path) if rank == 0 else None)
        every_rank_wrote(path, rank)
        on_every_rank(path, rank, partial(_publish, root, path, step, client_state, lineage) if rank == 0 else None)
    except CheckpointError:  # every rank: moved during the save, its files then missing, is not a full disk
        stop_if_moved(root, rank)
        raise
    if rank == 0 and keep:
        prune(root, keep)
    barrier()
    return lineage.after(path)


def stop_if_moved(root: Path, rank: int) -> None:
    """On every rank (a collective): raise RunDirError when the run directory holding `root` is no longer the one
    rank 0 locked (`rundir.moved_away`)."""
    if (moved := distributed.first_error(rundir.moved_away(root.parent) if rank == 0 else None)) is not None:
        raise rundir.RunDirError(moved)


def _make_room(root: Path, tag: str, keep: int, parent: Path | None) -> None:
    """Rank 0, before `tag` is written: the step directories at or after it go (set_aside), and with `keep`
    those beyond the newest `keep` complete ones, sparing `parent`. So do the temporaries of `latest` a kill left
    between their write and rename: only this run (it holds the run lock) writes them."""
    temporary = re.compile(temporaries(re.escape(LATEST)))
    for stale in root.glob(f".{LATEST}*.tmp"):
        if temporary.fullmatch(stale.name):
            stale.unlink(missing_ok=True)
    set_aside(root, tag)
    if keep:
        prune(root, keep, spare=parent)


def _write(engine, path: Path, client_state: dict, rank: int, ema) -> None:
    """This rank's files: DeepSpeed's, its generator states, its piece of the EMA. The step directory is made here
    first: DeepSpeed 0.19 catches the error of making it (a full disk, a quota of files, a read-only folder), logs it
    without its errno and writes on, and its save then failed as "Parent directory ... does not exist", naming no
    cause."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(path.parent), tag=path.name, client_state=client_state, save_latest=False)
    except (OSError, RuntimeError):
        # DeepSpeed's save ends with a barrier, after its writes: the ranks whose writes went through wait
        # there, and meet this one here before every rank learns of the failure (on_every_rank).
        barrier()
        raise
    torch.save(rng.capture(), path / rng.file_name(rank))
    if ema is not None:
        ema.save(path / ema_lib.file_name(rank))


def every_rank_wrote(path: Path, rank: int) -> None:
    """On every rank (a collective), before rank 0 publishes `path`: raise CheckpointError when rank 0 does not see
    each rank's generator states there (every rank writes one, after DeepSpeed's files), after rank 0 removed the
    directory. The ranks then wrote into different folders of one path (node-local storage under run_dir or its
    `checkpoints`), and the manifest would have listed rank 0's files alone as a complete checkpoint that no resume
    on every rank can load (shared_dir.py checks the run directory itself at the start)."""
    missing = None
    if rank == 0:
        absent = [r for r in range(distributed.world_size()) if not (path / rng.file_name(r)).is_file()]
        if absent:
            missing = (f"rank 0 does not see the files of rank{'s' if len(absent) > 1 else ''} "
                       f"{', '.join(map(str, absent))} there ({rng.file_name(absent[0])} is missing)")
            shutil.rmtree(path, ignore_errors=True)
    missing = distributed.broadcast_object(missing)
    if missing is not None:
        raise CheckpointError(f"cannot save the checkpoint {path}: {missing}: the ranks wrote into different folders "
                              "of that path; run_dir (and its checkpoints/) must be on a file system every node "
                              "shares, not on node-local storage")


def _publish(root: Path, path: Path, step: int, client_state: dict, lineage: Lineage) -> None:
    """Rank 0, once every rank's files are on disk: the manifest, then `latest`. The checkpoint counts from here."""
    fsync_dir(root)  # the step directory's own entry
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*"))
             if f.is_file() and f.name != MANIFEST}
    record = {"step": step, "layout": client_state.get("layout"), "schedule": client_state.get("schedule"),
              "files": files, **lineage.fields(root)}
    atomic_write(path / MANIFEST, json.dumps(record, indent=1))
    atomic_write(root / LATEST, path.name)


WRITE_FAILED = (*(f"[Errno {number}]" for number in REMEDIES), "unexpected pos", "file write failed")
"""How a write the disk refused reads in a save's error: the number of an OSError the user fixes on the disk
(disk_errors.REMEDIES: full, over quota, read-only, past `ulimit -f`), or torch's words for a write its archive writer
could not finish (it names no cause when the disk is full). A permission denied or a folder moved away mid-save is
said as it is."""


def on_every_rank(path: Path, rank: int, action=None, remove: bool = True) -> None:
    """Run this rank's part (`action`, if any) of saving `path`. When it failed on any rank, every rank raises
    the first rank's error, with the disk as its likely cause where the error is a failed write (WRITE_FAILED),
    after rank 0 removed the unfinished directory (`remove`) so that nothing there can pass for a checkpoint. Any
    other error is said as it is: a loader worker killed by the out-of-memory killer lands wherever the main thread
    is, a save included, and was reported as a full disk."""
    error = None
    try:
        if action is not None:
            action()
    except (OSError, RuntimeError) as err:
        error = one_line(err)
    error = distributed.first_error(error)
    if error is None:
        return
    if rank == 0 and remove:
        shutil.rmtree(path, ignore_errors=True)
    good = complete_tags(path.parent, before=path.name)
    disk = (": is the disk full, over quota or past a file-size limit (ulimit -f)? " if any(
        sign in error for sign in WRITE_FAILED) else ". ")
    raise CheckpointError(f"cannot save the checkpoint {path} ({error}){disk}"
                          + ("The unfinished directory is removed; " if remove else "")
                          + (f"{path.parent / good[-1]} is the newest good checkpoint" if good
                             else "no checkpoint of this run was complete before it"))


def set_aside(root: Path, tag: str) -> None:
    """Before `tag` is saved, clear the step directories at or after it. Unfinished ones go (a save killed by a
    crash). Complete ones are the checkpoints of a run that went further and was then resumed from an older
    one (`resume=<step dir>`): they move to `abandoned/`, out of the sight of resume and prune but not deleted,
    since a mistyped `resume=` should cost disk space, not training. Deleting them is for the user to do."""
    for path in step_dirs(root):
        if path.name < tag:
            continue
        if damage(path) is not None:
            shutil.rmtree(path)
            continue
        target = root / ABANDONED / path.name
        copies = 1
        while target.exists():  # a second abandoned branch with the same step
            copies += 1
            target = root / ABANDONED / f"{path.name}.{copies}"
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        print(f"[checkpoint] {path} comes from a run that went past the checkpoint this one resumed from: moved "
              f"to {target}; delete it if it is not needed", file=sys.stderr, flush=True)


def prune(root: Path, keep: int, spare: Path | None = None) -> None:
    """Keep the newest `keep` complete checkpoints, and `spare` (the checkpoint a save continues) if it is one of
    `root`'s; delete every step directory older than them (complete or not: an unfinished save older than a
    complete one will never be resumed). After a save the newest is the one just saved: set_aside left nothing
    newer."""
    kept = complete_tags(root)[-keep:]
    if spare is not None and spare.parent == root.resolve():
        kept.insert(0, spare.name)
    for path in step_dirs(root):
        if kept and path.name < min(kept):
            shutil.rmtree(path, ignore_errors=True)
