"""Checkpoints: DeepSpeed's save on every rank, plus our client state, a manifest and `latest`.

Layout under `<run>/checkpoints/`:
    step_00000100/            DeepSpeed's files (model, optimizer shards) for update 100
        rng_rank00000.pt      each rank's generator states (rng.py)
        ema_rank00000.safetensors   each rank's piece of the EMA weights, when EMA is on (ema.py)
        manifest.json         written by rank 0 after every rank's files are on disk (fsynced): file names
                              and sizes, the layout (data-parallel size, pipeline stages, ZeRO stage,
                              global batch) and the lineage (lineage.py)
        universal/            DeepSpeed's universal form, made on a resume with another data-parallel size
    latest                    the tag of the newest complete checkpoint, written last (atomically, fsynced)
    abandoned/step_00000300/  a checkpoint of a run that went further and was resumed from an older one

A checkpoint counts only when its manifest exists and every listed file has its recorded size and
readable ends (`unreadable`), so a run killed mid-save, or a power loss that zeroed a file, leaves a
directory that resume skips. `resume=auto` takes the checkpoint `latest` names, or, when that one is
missing or damaged, the newest complete one before it; where none is usable though a save once
finished, it stops rather than start again from step 0. `resume=<step dir>` goes back to that checkpoint
once: when the run has since trained on from it, a rerun of the same command continues (lineage.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from functools import partial
from pathlib import Path

import torch

from megadalle.data import atomic
from megadalle.train import distributed, ema as ema_lib, rng, schedule
from megadalle.train.distributed import barrier
from megadalle.train.lineage import Lineage
from megadalle.errors import UserError

MANIFEST = "manifest.json"
LATEST = "latest"
ABANDONED = "abandoned"
TAG = re.compile(r"^step_(\d{8})$")

class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the path and the reason."""


def tag_of(step: int) -> str:
    return f"step_{step:08d}"


def atomic_write(path: Path, text: str) -> None:
    """`text` as `path`, the old text or the new after a power loss too: atomic.write_bytes fsyncs its temporary
    and renames it (and removes it when the write fails: a full disk leaves no `.latest.*.tmp`), then the
    directory is fsynced (without the fsyncs a crash can leave the renamed file empty)."""
    atomic.write_bytes(path, text.encode())
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: Path) -> None:
    """fsync every file under `path`, then the directories. DeepSpeed closes its files without: until then a
    power loss can leave them at their full size and zeroed, which the manifest's sizes cannot tell. Rank 0
    alone does it, once every rank's writes are closed: a checkpoint has ~2 files per rank, and every rank
    fsyncing every file was W^2 calls on shared storage (its clients flush a file's writes at close)."""
    for item in sorted(path.rglob("*"), key=lambda p: p.is_dir()):
        if item.is_file():
            with open(item, "rb") as f:
                os.fsync(f.fileno())
        elif item.is_dir():
            fsync_dir(item)
    fsync_dir(path)


LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
"""The first bytes of torch's pre-zip format (pickle of its magic number), which DeepSpeed writes when
`checkpoint.checkpoint_serialization: false`."""


def legacy_torch_file(file: Path) -> bool:
    with open(file, "rb") as f:
        return f.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC


def unreadable(file: Path) -> str | None:
    """Why `file` cannot be what its name says, judged from its ends alone (cheap at any size): a torch `.pt`
    without its zip directory (at the end), a `.safetensors` without its JSON header (at the start).
    This catches the zeroed files a power loss leaves. Damage in the middle is for the readers that check each
    zip record's CRC-32 (export, generate, `load_run`: zip_crc.py), not for resume (see `load`)."""
    if file.suffix == ".pt" and not zipfile.is_zipfile(file) and not legacy_torch_file(file):
        return f"{file} is not a readable torch file (zeroed or overwritten)"
    if file.suffix == ".safetensors":
        with open(file, "rb") as f:
            header = int.from_bytes(f.read(8), "little")
            if not 0 < header <= file.stat().st_size - 8 or f.read(1) != b"{":
                return f"{file} is not a readable safetensors file (zeroed or overwritten)"
    return None


def damage(path: Path) -> str | None:
    """Why the checkpoint directory `path` cannot be used, or None when it is complete."""
    if not path.is_dir():
        return f"{path} does not exist"
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{path} has no {MANIFEST} (the save did not finish)"
    try:
        files = dict(json.loads(manifest.read_text())["files"])
    except (ValueError, KeyError, TypeError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != size:
            return f"{file} has {file.stat().st_size} bytes, the manifest says {size}"
        why = unreadable(file)
        if why is not None:
            return why
    return None


def step_dirs(root: Path) -> list[Path]:
    """The `step_*` directories under `root`, oldest first."""
    return sorted(p for p in root.glob("step_*") if TAG.match(p.name)) if root.is_dir() else []


def complete_tags(root: Path, before: str | None = None) -> list[str]:
    """Complete checkpoint tags under `root`, oldest first; with `before`, only those older than that tag."""
    return [p.name for p in step_dirs(root) if (before is None or p.name < before) and damage(p) is None]


def read_latest(root: Path) -> tuple[str | None, str | None]:
    """The tag `latest` names (None without a `latest`, or when it holds no tag) and why that cannot be
    resumed (None when it can). A garbled `latest` (random bytes after a crash) names nothing and is the reason."""
    latest = root / LATEST
    if not latest.is_file():
        return None, None
    text = latest.read_bytes().decode(errors="replace").strip()
    if not TAG.match(text):
        return None, f"{latest} holds {text[:40]!a}, not a checkpoint tag (garbled)"
    why = damage(root / text)
    return text, None if why is None else f"{LATEST} names {text}, which is damaged: {why}"


def find_resumable(root: Path) -> str | None:
    """The tag `latest` names if complete, or the complete one after it that continues it (`continuation`).
    When it is damaged, the newest complete checkpoint older than it
    (with a warning): newer ones belong to a run abandoned by a resume from an older checkpoint. Without a
    `latest`, the newest complete one.

    None only where no save ever finished (no `latest`, no manifest: a fresh run, or one killed in its first
    save). Where one did and nothing is usable now, CheckpointError: starting again from step 0 would append
    to the old metrics, take a new wandb id and later prune the damaged checkpoints, all in silence."""
    named, why = read_latest(root)
    if named is not None and why is None:
        return continuation(root, named) or named
    tags = complete_tags(root, before=named)
    if tags:
        if why is not None:
            print(f"[checkpoint] {why}; falling back to {tags[-1]}", file=sys.stderr, flush=True)
        return tags[-1]
    finished = [p for p in step_dirs(root) if (p / MANIFEST).is_file()]
    if why is None and finished:
        why = damage(finished[-1])
    if why is None:
        return None
    raise CheckpointError(f"no usable checkpoint in {root}: {why}, and no complete checkpoint "
                          f"{'before it' if named else 'is left'}; to start over use a new run_dir, to continue "
                          "another checkpoint pass resume=<its step_* directory>")


def continuation(root: Path, named: str) -> str | None:
    """A complete checkpoint newer than the one `latest` names that continues it: a kill between its manifest and
    `latest` left it (set_aside clears the newer ones before every save, so nothing else leaves one)."""
    parent = (root / named).resolve()
    for path in reversed([p for p in step_dirs(root) if p.name > named]):
        if damage(path) is None and lineage_of(path).parent == parent:
            print(f"[checkpoint] {path} is complete and continues {named}, which {LATEST} still names (the save "
                  f"was stopped before it wrote {LATEST}): resuming from it", file=sys.stderr, flush=True)
            return path.name
    return None


def lineage_of(path: Path) -> Lineage:
    """The lineage a complete checkpoint's manifest records (tags relative to its `checkpoints/`, also from
    `abandoned/`)."""
    root = path.parent.parent if path.parent.name == ABANDONED else path.parent
    return Lineage.of(json.loads((path / MANIFEST).read_text()), root)


def resolve(resume: str, root: Path) -> Path | None:
    """The checkpoint directory to resume from for `resume` = auto | never | <path of a step_* dir>."""
    return choose(resume, root)[0]


def choose(resume: str, root: Path) -> tuple[Path | None, Lineage]:
    """`resolve`'s checkpoint and the lineage of the run's first save: the trainer holds it and passes it to each
    `save`, which returns the next one (per trainer, not per process: two trainers in one process, the demo's or
    the tests', each keep their own)."""
    if resume == "never":
        if complete_tags(root):
            raise CheckpointError(f"resume=never but {root} already holds checkpoints; use resume=auto or a new run_dir")
        return None, Lineage()
    if resume == "auto":
        tag = find_resumable(root)
        return (root / tag, lineage_of(root / tag).after(root / tag)) if tag else (None, Lineage())
    path = Path(resume)
    newest = _newest_descendant(path, root)
    if newest is not None:
        print(f"[checkpoint] resume={resume}: this run resumed from it before and has saved {newest} since; "
              f"continuing from there (to go back to it again, move the later step_* directories out of {root})",
              file=sys.stderr, flush=True)
        return newest, lineage_of(newest).after(newest)
    if not path.is_dir():
        raise CheckpointError(f"resume={resume}: no such checkpoint directory")
    why = damage(path)
    if why is not None:
        raise CheckpointError(f"resume={resume}: {why}")
    return path, lineage_of(path).after(path, by_name=True)


def _newest_descendant(path: Path, root: Path) -> Path | None:
    """The checkpoint `resume=auto` would take when an earlier `resume=<path>` led to it (`path` itself may be
    pruned by now); None otherwise: going back to a checkpoint that the run merely passed is what the user asks."""
    try:
        tag = find_resumable(root)
    except CheckpointError:  # nothing usable here: `path` alone decides
        return None
    if tag is None or (root / tag).resolve() == path.resolve():
        return None
    return root / tag if path.resolve() in lineage_of(root / tag).resumed_from else None


def save(engine, root: Path, step: int, client_state: dict, rank: int, lineage: Lineage, ema=None,
         keep: int = 0) -> Lineage:
    """Save on every rank; rank 0 then writes the manifest, `latest`, and prunes old checkpoints.
    `client_state["layout"]` (universal.Layout's fields) goes into the manifest too, and `lineage` (`choose`'s, or
    the previous save's; only rank 0's counts). Returns the lineage of the next save, whose parent is this one.

    With `keep`, rank 0 prunes before the save as well (never the checkpoint the run continues): a run resumed
    with a lower `trainer.keep_checkpoints` frees that disk space before it needs it, not after.

    Every file is fsynced before the manifest is written, so a checkpoint that counts as complete survives a
    power loss. A failure on any rank (a full disk) stops every rank with the same line, and the unfinished
    directory is removed: no rank waits at a barrier for one that has left."""
    tag = tag_of(step)
    path = root / tag
    on_every_rank(path, rank, partial(_make_room, root, tag, keep, lineage.parent) if rank == 0 else None,
                  remove=False)
    on_every_rank(path, rank, partial(_write, engine, path, client_state, rank, ema))
    on_every_rank(path, rank, partial(sync_tree, path) if rank == 0 else None)
    on_every_rank(path, rank, partial(_publish, root, path, step, client_state, lineage) if rank == 0 else None)
    if rank == 0 and keep:
        prune(root, keep)
    barrier()
    return lineage.after(path)


def _make_room(root: Path, tag: str, keep: int, parent: Path | None) -> None:
    """Rank 0, before `tag` is written: the step directories at or after it go (set_aside), and with `keep`
    those beyond the newest `keep` complete ones, sparing `parent`. So do the temporaries of `latest` a kill left
    between their write and rename: only this run (it holds the run lock) writes them."""
    for stale in root.glob(f".{LATEST}.*.tmp"):
        stale.unlink(missing_ok=True)
    set_aside(root, tag)
    if keep:
        prune(root, keep, spare=parent)


def _write(engine, path: Path, client_state: dict, rank: int, ema) -> None:
    """This rank's files: DeepSpeed's, its generator states, its piece of the EMA."""
    try:
        engine.save_checkpoint(str(path.parent), tag=path.name, client_state=client_state, save_latest=False)
    except (OSError, RuntimeError):
        # DeepSpeed's save ends with a barrier, after its writes: the ranks whose writes went through wait
        # there, and meet this one here before every rank learns of the failure (on_every_rank).
        barrier()
        raise
    torch.save(rng.capture(), path / f"rng_rank{rank:05d}.pt")
    if ema is not None:
        ema.save(path / ema_lib.file_name(rank))


def _publish(root: Path, path: Path, step: int, client_state: dict, lineage: Lineage) -> None:
    """Rank 0, once every rank's files are on disk: the manifest, then `latest`. The checkpoint counts from here."""
    fsync_dir(root)  # the step directory's own entry
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*"))
             if f.is_file() and f.name != MANIFEST}
    record = {"step": step, "layout": client_state.get("layout"), "files": files, **lineage.fields(root)}
    atomic_write(path / MANIFEST, json.dumps(record, indent=1))
    atomic_write(root / LATEST, path.name)


def on_every_rank(path: Path, rank: int, action=None, remove: bool = True) -> None:
    """Run this rank's part (`action`, if any) of saving `path`. When it failed on any rank, every rank raises
    the first rank's error with its likely cause (torch says only `unexpected pos` when the disk is full),
    after rank 0 removed the unfinished directory (`remove`) so that nothing there can pass for a checkpoint."""
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
    raise CheckpointError(f"cannot save the checkpoint {path} ({error}): is the disk full, over quota or past a "
                          "file-size limit (ulimit -f)? " + ("The unfinished directory is removed; " if remove else "")
                          + (f"{path.parent / good[-1]} is the newest good checkpoint" if good
                             else "no checkpoint of this run was complete before it"))


def one_line(err: BaseException) -> str:
    """`err`'s type and first sentence: torch's further sentences advise `weights_only=False`, wrong for a damaged file."""
    text = re.split(r"\.\s+(?=[A-Z])|\n", str(err).strip(), maxsplit=1)[0][:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


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


def load(engine, path: Path, rank: int, ema=None, universal: Path | None = None) -> dict:
    """Load DeepSpeed state, this rank's generators and EMA from `path`; return the client state.

    `universal`: the checkpoint's universal form (the data-parallel size changed; see universal.py).
    Then DeepSpeed's state comes from there, and a rank the saving run did not have keeps the
    generators it was seeded with (a warning says so): its dropout masks cannot be the old ones anyway.

    A failure on any rank stops every rank with the first one's error in one line, which names the
    checkpoint and the complete one before it: damage inside a file (`damage` sees only its ends) that breaks
    a pickle or a zip record's header shows here, as torch's own error.

    Resume does not check the records' CRC-32, as export, generate and `load_run` do (zip_crc.py), so damage
    inside a tensor's bytes loads in silence here. What resume trains from is each rank's share of the fp32
    masters and optimizer states (at 12B, ~18 GB a rank at 8-way ZeRO-2): checking it is a second pass over every
    byte before the load (zlib's CRC-32 ran at ~1 GB/s on one core of the CI machine: ~20 s a rank, and a second
    read from shared storage where the page cache cannot hold a node's shares), on every resume, Slurm requeues
    included. The module states file alone would be cheaper but is no use here: under ZeRO 1-2 the fp32 masters
    overwrite its weights at resume, so its damage cannot reach the run, and export checks it.
    """
    client_state, error = {}, None
    try:
        client_state = _read(engine, path, rank, ema, universal)
    except CheckpointError as err:
        error = str(err)
    except Exception as err:  # whatever reading a damaged file raises: KeyError, UnpicklingError, RuntimeError...
        older = complete_tags(path.parent, before=path.name)
        error = (f"cannot load the checkpoint {universal or path} ({one_line(err)}); if it is damaged, "
                 + (f"resume from the complete one before it: resume={path.parent / older[-1]}" if older
                    else "start over in a new run_dir: no complete checkpoint precedes it"))
    error = distributed.first_error(error)
    if error is not None:
        raise CheckpointError(error)
    return client_state


def _read(engine, path: Path, rank: int, ema, universal: Path | None) -> dict:
    source = universal or path
    loaded, client_state = engine.load_checkpoint(str(source.parent), tag=source.name, load_module_strict=True,
                                                  load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load the checkpoint {source}")
    schedule.rejoin(engine.lr_scheduler)
    rng_file = path / f"rng_rank{rank:05d}.pt"
    if rng_file.is_file():
        rng.restore(torch.load(rng_file, weights_only=True))
    elif universal is not None:
        print(f"[checkpoint] warning: {rng_file} is missing (the run was saved by fewer ranks); rank {rank} keeps "
              "freshly seeded generators", file=sys.stderr, flush=True)
    else:
        raise CheckpointError(f"{rng_file} is missing: was the run saved with a different number of ranks?")
    if ema is not None:
        try:
            ema.load(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"cannot restore the EMA: {err}") from err
    return client_state
