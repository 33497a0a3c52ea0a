"""The held-out validation split: which samples `prepare` writes to `<output>/val/` instead of `<output>/`.

A sample's side is a pure function of its source image's bytes, as `prepare` read them (the file of a folder or
manifest, the image field of a shard sample): the first 8 bytes of their SHA-256, read as a fraction of 2**64, below
`val_fraction` means validation. Never of its position in the listing nor of its name: adding or removing other inputs
moves no sample across (a position-based split sent held-out samples into training when a file sorting first was
added), and neither does moving the data, reaching it by another path, growing it as a sibling source under a new
root, re-sharding it or re-keying it (a name-based split did each: a COCO manifest copied to another disk, `raw/cc3m`
prepared again as part of `raw/`, the same shards cut at another size, each moved most held-out samples into
training). The same image is on one side wherever it is and whatever it is called, so byte-identical copies (scrapes
repost) and an image's several captions are never split across (a re-encoded or resized copy has other bytes, and
may be). Rerunning `prepare` gives the same split whatever the
number of workers, and `encode` carries it over to the token shards (`<tokens>/val/`), so the dVAE, CLIP and the
Transformer hold out the very same samples.

The rule is recorded in both indexes' meta (`split_rule`): a split drawn by an earlier rule (the sample's name, before
this one) is redrawn on the next run, and `prepare` says so (`redrawn_note`), as a run trained on the old split's
training shards has seen some of the new validation samples.

Each run replaces `<output>/val/` (a stale split must not be read as this run's), but only a folder
holding nothing but what megadalle writes there: a `val/` of the user's own (images, notes, shards from
elsewhere) is refused before any work, never deleted.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from megadalle.config.data import VAL_DIR
from megadalle.data.atomic import temporaries
from megadalle.data.verb_outputs import PREPARE_SHARD
from megadalle.errors import UserError

__all__ = ["SPLIT_RULE", "VAL_DIR", "SecondSplitError", "SplitDirError", "check_split_dir", "image_digest",
           "is_validation", "redrawn_note", "remove_split_dir", "split_rule"]

SPLIT_RULE = "image-sha256"
"""What index.json's meta says (`split_rule`) of a split drawn by `is_validation` over `image_digest`."""
NAME_RULE = "sample-name"
"""The rule of a split whose index records none: before SPLIT_RULE, a hash of the sample's name in the input."""

OWN = rf"{PREPARE_SHARD.pattern}(?:\.idx)?|index\.json|(?:index-)?report\.json"
"""What megadalle writes into a shard folder: shards, offsets, index (shards.py, ingest/) and reports."""
OWN_FILE = re.compile(rf"(?:{OWN})|{temporaries(OWN)}|\.index\.lock|\.indexing")
"""Those, their hidden temporaries (`atomic.py`) and indexing's lock and mark."""


class SplitDirError(UserError, FileExistsError):
    """`<output>/val/` is not a split `prepare` wrote, so replacing it would delete the user's files."""


class SecondSplitError(UserError, ValueError):
    """`val_fraction` asked of an input that has its own validation split: its held-out samples stay held out, so a
    fraction on top would hold out about twice what was asked (a rerun with the first run's val_fraction=0.05 gave
    10%), and any other way of re-splitting would move validated samples into training."""


def image_digest(data: bytes) -> bytes:
    """SHA-256 of a source image's bytes: what decides its side (`is_validation`), computed by the worker that read
    them (`convert`), so no image is read twice."""
    return hashlib.sha256(data).digest()


def is_validation(digest: bytes, fraction: float) -> bool:
    """True when the image whose `image_digest` is `digest` belongs to the held-out split of size `fraction`
    (0 <= fraction < 1)."""
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def split_rule(val_dir: Path) -> str | None:
    """The rule that drew the split in `val_dir`: its index's record, NAME_RULE for a prepare's that records none;
    None when no finished split is there or tars from elsewhere are (indexed by `megadalle index`: no rule known)."""
    try:
        meta = json.loads((val_dir / "index.json").read_text(encoding="utf-8"))["meta"]
        return meta.get("split_rule", None if "indexed_by" in meta else NAME_RULE)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def redrawn_note(val_dir: Path, earlier: str | None) -> str:
    """What to tell of a split drawn by `SPLIT_RULE` over one that `earlier` drew in `val_dir`: empty when it drew
    the same way (or nothing was there), else that samples changed side."""
    if earlier in (None, SPLIT_RULE):
        return ""
    return (f"{val_dir} held a split drawn by {earlier} (an older megadalle); this one is drawn by {SPLIT_RULE}, so "
            "some samples changed side: a model trained on the old training shards has seen some of the new "
            "validation samples, so start its training afresh rather than resume it on this data")


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
