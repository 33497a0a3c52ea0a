"""Which checkpoint a run resumes from, for `resume=auto | never | <step dir>`, and the lineage of its next save.

`resume=auto` takes the checkpoint `latest` names, or, when that one is missing or damaged, the newest complete
one before it; where none is usable though a save once finished, it stops rather than start again from step 0.
`resume=<step dir>` goes back to that checkpoint once: when the run has since trained on from it, a rerun of the
same command continues (lineage.py). Rank 0 of a run asks (loop.Trainer), and so do the readers that must agree
with it: a rerun's step (rundir.resume_step) and export's newest checkpoint (consolidate.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from megadalle.train.checkpoint import ABANDONED, LATEST, MANIFEST, TAG, CheckpointError, step_dirs
from megadalle.train.checkpoint_damage import complete_tags, damage
from megadalle.train.lineage import Lineage


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


RESUME_ADVICE = "to start over use a new run_dir, to continue another checkpoint pass resume=<its step_* directory>"
"""What a training run does when no checkpoint of its run is usable; a reader of the run (export, generate) passes
its own (consolidate.read_advice)."""


def find_resumable(root: Path, advice: str = RESUME_ADVICE) -> str | None:
    """The tag `latest` names if complete, or the complete one after it that continues it (`continuation`).
    When it is damaged, the newest complete checkpoint older than it
    (with a warning): newer ones belong to a run abandoned by a resume from an older checkpoint. Without a
    `latest`, the newest complete one.

    None only where no save ever finished (no `latest`, no manifest: a fresh run, or one killed in its first
    save). Where one did and nothing is usable now, CheckpointError ending with `advice`: starting again from
    step 0 would append to the old metrics, take a new wandb id and later prune the damaged checkpoints, all in
    silence."""
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
                          f"{'before it' if named else 'is left'}; {advice}")


def continuation(root: Path, named: str) -> str | None:
    """A complete checkpoint newer than the one `latest` names that continues it: a kill between its manifest and
    `latest` left it (checkpoint_save.set_aside clears the newer ones before every save, so nothing else leaves
    one)."""
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
    `checkpoint_save.save`, which returns the next one (per trainer, not per process: two trainers in one process,
    the demo's or the tests', each keep their own)."""
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
    refuse_a_run(resume, path)
    why = damage(path)
    if why is not None:
        raise CheckpointError(f"resume={resume}: {why}")
    return path, lineage_of(path).after(path, by_name=True)


def refuse_a_run(resume: str, path: Path) -> None:
    """Refuse `resume=` naming a run directory or its `checkpoints` folder, with the checkpoint to pass: it was
    refused as "has no manifest.json (the save did not finish)", an unfinished save where there was none."""
    if TAG.match(path.name):
        return
    for folder, what in ((path / "checkpoints", "a run directory"), (path, "a folder of checkpoints")):
        if step_dirs(folder) or (folder / LATEST).exists():
            tag = find_resumable(folder)
            way = f"pass resume={folder / tag}, its newest complete one" if tag else "it holds no complete one"
            raise CheckpointError(f"resume={resume}: {what}, not a checkpoint (a step_* directory): {way}")


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
