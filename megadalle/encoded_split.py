"""The validation split an earlier encode carried into `<output>/val/` from its input's `val/`, found when the input
has none now: removed, as `prepare` removes its own split when a run holds out nothing (data/split.py).

train reads `<shards>/val` by default (data.val_shards=null), so such a split left behind was validated on without a
word, its samples now training samples (the input prepared again with val_fraction=0, or the output folder reused
for another data set); encoded again with another dVAE, train refused a split the user had never named. Only a
folder of encode's own files goes: a split of encode's that holds other files too is refused by name before any
work, never deleted, and a folder encode did not write as a split (token shards of the user's, an encode of another
set into `<output>/val/`) stays the validation split it was put there to be.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from megadalle.config.data import VAL_DIR
from megadalle.data.coverage import own_output, shown_names
from megadalle.data.index import INDEX_NAME, ShardIndex
from megadalle.data.output_guard import OutputTaken
from megadalle.data.verb_outputs import RECORD_SUFFIX, may_write_over, writer_of
from megadalle.folder_lock import LOCK

BESIDE_SHARDS = re.compile(rf"{re.escape(INDEX_NAME)}|.+\.tar(?:\.idx|{re.escape(RECORD_SUFFIX)})|"
                           rf"{re.escape(LOCK)}|\.encode-.+|\..+\.tmp")
"""What encode writes into a folder beside its shards: index.json, offsets, records, its lock, its staging folders
and hidden temporaries (atomic.py)."""


def stale_split(output: str | Path) -> Path | None:
    """`<output>/val` when an encode wrote it as a split (call it for an input without one); OutputTaken when files
    encode did not write are in it too; None when there is none or it is not encode's split."""
    val = Path(output) / VAL_DIR
    if val.is_symlink() or not val.is_dir() or not _written_as_split(val):
        return None
    if others := sorted(p.name + "/" * p.is_dir() for p in val.iterdir() if not _encodes(val, p)):
        entries, them = ("entries", "them") if len(others) > 1 else ("entry", "it")
        raise OutputTaken(f"output={val} holds the validation split an earlier encode carried over from its "
                          f"input's {VAL_DIR}/, which this input does not have (train would validate on it: "
                          f"data.val_shards=null reads <shards>/{VAL_DIR}), and {len(others)} {entries} encode did "
                          f"not write ({shown_names(others)}), so encode does not remove it; move {them} out of it, "
                          "or give another output=")
    return val


def remove_split(val: Path) -> None:
    """Delete the split `stale_split` found, saying so."""
    shutil.rmtree(val)
    print(f"[encode] {val}: removed the validation split an earlier encode carried over from its input's "
          f"{VAL_DIR}/: this input has none, and train would have validated on it", file=sys.stderr, flush=True)


def _written_as_split(val: Path) -> bool:
    """Whether encode wrote `val` from an input's split: its index.json says so (its source is a `val/`), or, where a
    crash left none, encode's records or staging are there."""
    index = ShardIndex.readable(val)
    if index is not None:
        return own_output(index) and writer_of(index) == "encode" and Path(index.meta.get("source", "")).name == VAL_DIR
    return any(p.name.endswith(RECORD_SUFFIX) or p.name.startswith(".encode-") for p in val.iterdir())


def _encodes(val: Path, entry: Path) -> bool:
    """Whether encode wrote `entry` of `val`: a tar of its own (`may_write_over`), or one of its files beside them."""
    if entry.name.endswith(".tar") and not entry.name.startswith(".") and entry.is_file():
        return may_write_over("encode", val, entry.name)
    return BESIDE_SHARDS.fullmatch(entry.name) is not None and (entry.is_dir() == entry.name.startswith(".encode-"))
