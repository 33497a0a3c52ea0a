"""The held-out validation split: which samples `prepare` writes to `<output>/val/` instead of `<output>/`.

A sample's side is a pure function of its identity, its name in the input (`sources.Item.identity`: the
relative path in a folder, the resolved image path in a manifest, shard name and key for a shard sample):
the first 8 bytes of SHA-256 of its bytes (`names.name_bytes`: a name that is not UTF-8 hashes as the bytes it was
read from), read as a fraction of 2**64, below `val_fraction` means validation.
Never of its position in the listing: adding or removing other inputs then moves no sample across (a
position-based split sent samples that had been held out into training when a file sorting first was
added, so the model trained on what it had been measured on). Rerunning `prepare` gives the same split
whatever the number of workers, and `encode` carries it over to the token shards (`<tokens>/val/`), so
the dVAE, CLIP and the Transformer hold out the very same samples.

Each run replaces `<output>/val/` (a stale split must not be read as this run's), but only a folder
holding nothing but what megadalle writes there: a `val/` of the user's own (images, notes, shards from
elsewhere) is refused before any work, never deleted.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from megadalle.config.data import VAL_DIR
from megadalle.data.names import name_bytes
from megadalle.data.verb_outputs import PREPARE_SHARD
from megadalle.errors import UserError

__all__ = ["VAL_DIR", "SecondSplitError", "SplitDirError", "check_split_dir", "is_validation", "remove_split_dir"]

OWN = rf"{PREPARE_SHARD.pattern}(?:\.idx)?|index\.json|(?:index-)?report\.json"
"""What megadalle writes into a shard folder: shards, offsets, index (shards.py, ingest/) and reports."""
OWN_FILE = re.compile(rf"(?:{OWN})|\.(?:{OWN})(?:\.\d+-[0-9a-f]+)?\.tmp|\.index\.lock|\.indexing")
"""Those, their hidden temporaries (`atomic.py`) and indexing's lock and mark."""


class SplitDirError(UserError, FileExistsError):
    """`<output>/val/` is not a split `prepare` wrote, so replacing it would delete the user's files."""


class SecondSplitError(UserError, ValueError):
    """`val_fraction` asked of an input that has its own validation split: its held-out samples stay held out, so a
    fraction on top would hold out about twice what was asked (a rerun with the first run's val_fraction=0.05 gave
    10%), and any other way of re-splitting would move validated samples into training."""


def is_validation(identity: str, fraction: float) -> bool:
    """True when the sample named `identity` belongs to the held-out split of size `fraction` (0 <= fraction < 1)."""
    digest = hashlib.sha256(name_bytes(identity)).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def check_split_dir(val_dir: Path) -> None:
    """SplitDirError unless `val_dir` is absent or a folder of megadalle's own files only."""
    if not val_dir.exists() and not val_dir.is_symlink():
        return
    if val_dir.is_symlink() or not val_dir.is_dir():
        kind = "a link" if val_dir.is_symlink() else "a file"
        raise SplitDirError(f"{val_dir} is {kind}, not the validation split prepare writes there; move it away "
                            f"or choose another output=")
    foreign = sorted(p.name + "/" * p.is_dir() for p in val_dir.iterdir()
                     if p.is_dir() or not OWN_FILE.fullmatch(p.name))
    if foreign:
        raise SplitDirError(f"{val_dir} holds {len(foreign)} entries prepare did not write ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}), and prepare replaces that folder with its "
                            f"validation split; move them out or choose another output=")


def remove_split_dir(val_dir: Path) -> None:
    """Delete a split an earlier run wrote (SplitDirError if anything else is in it)."""
    check_split_dir(val_dir)
    shutil.rmtree(val_dir, ignore_errors=True)
