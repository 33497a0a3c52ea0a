"""Checkpoints: DeepSpeed's save on every rank, plus our client state, a manifest and `latest`.

Layout under `<run>/checkpoints/`:
    step_00000100/            DeepSpeed's files (model, optimizer shards) for update 100
        rng_rank00000.pt      each rank's generator states (rng.py)
        ema_rank00000.safetensors   each rank's piece of the EMA weights, when EMA is on (ema.py)
        manifest.json         written by rank 0 after every rank's files are on disk (fsynced): file names
                              and sizes, the layout (data-parallel size, pipeline stages, ZeRO stage,
                              global batch), the learning-rate curve's trainer keys (schedule.SCHEDULE)
                              and the lineage (lineage.py)
        universal/            DeepSpeed's universal form, made on a resume with another data-parallel size
    latest                    the tag of the newest complete checkpoint, written last (atomically, fsynced)
    abandoned/step_00000300/  a checkpoint of a run that went further and was resumed from an older one

This module holds the names of that layout and the error the checkpoint modules raise. The work on a checkpoint
is one module a question, each with readers of its own (export and a rerun's `rundir` need damage and choice,
never save or load):
    checkpoint_save.py     saving on every rank: the files, the manifest, `latest`; setting aside and pruning
    checkpoint_damage.py   whether a checkpoint directory is complete
    checkpoint_choice.py   which checkpoint a run resumes from (`resume=auto | never | <step dir>`)
    checkpoint_load.py     loading it on every rank
    durable.py             the fsyncs that let a complete checkpoint survive a power loss
"""
from __future__ import annotations

import re
from pathlib import Path

from megadalle.errors import UserError

MANIFEST = "manifest.json"
LATEST = "latest"
ABANDONED = "abandoned"
TAG = re.compile(r"^step_(\d{8})$")

class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the path and the reason."""


def tag_of(step: int) -> str:
    return f"step_{step:08d}"


def step_dirs(root: Path) -> list[Path]:
    """The `step_*` directories under `root`, oldest first."""
    return sorted(p for p in root.glob("step_*") if TAG.match(p.name)) if root.is_dir() else []


def one_line(err: BaseException) -> str:
    """`err`'s type and first sentence: torch's further sentences advise `weights_only=False`, wrong for a damaged file."""
    text = re.split(r"\.\s+(?=[A-Z])|\n", str(err).strip(), maxsplit=1)[0][:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
