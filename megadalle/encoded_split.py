"""The validation split an earlier encode carried into `<output>/val/` from its input's `val/`, found when the input
has none now: removed, as `prepare` removes its own split when a run holds out nothing (data/split.py).

train reads `<shards>/val` by default (data.val_shards=null), so such a split left behind was validated on without a
word, its samples now training samples (the input prepared again with val_fraction=0, or the output folder reused
for another data set); encoded again with another dVAE, train refused a split the user had never named. Only a
folder of encode's own files goes: a split of encode's that holds other files too is refused by name before any
work, never deleted, and a folder encode did not write as a split (token shards of the user's, an encode of another
set into `<output>/val/`, that set's own folder named `val` too) stays the validation split it was put there to be.

A carried split says so in its index.json ({"split": "val"}, as prepare's does), and the output that holds it in its
own ({"carried_split": "val"}): that is the only word on a split a crash left without its index.json. The name of
the folder it was encoded from proves nothing: an encode of `other/val` into `<output>/val` on purpose has that name,
and an input's `val/` linked to a folder of another name does not.
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

STAGING = ".encode-"
"""`<output>/.encode-<shard>/`: where encode writes one output shard before it publishes it (encode.encode_shard)."""

BESIDE_SHARDS = re.compile(rf"{re.escape(INDEX_NAME)}|.+\.tar(?:\.idx|{re.escape(RECORD_SUFFIX)})|"
                           rf"{re.escape(LOCK)}|{re.escape(STAGING)}.+|\..+\.tmp")
"""What encode writes into a folder beside its shards: index.json, offsets, records, its lock, its staging folders
and hidden temporaries (atomic.py)."""

SPLIT = {"split": VAL_DIR}
"""What the index.json of a split encode carried into `<output>/val/` records (prepare's split records the same)."""

CARRIES = {"carried_split": VAL_DIR}
"""What the output's own index.json records when encode carried its input's split into `<output>/val/`."""


def split_meta(pairs: int) -> list[dict]:
    """What each of the `pairs` folders encode writes (encode.folder_pairs: its input's split if it has one, then the
    output) records of the split in its index.json's meta."""
    return [SPLIT, CARRIES] if pairs > 1 else [{}]


def stale_split(output: str | Path) -> Path | None:
    """`<output>/val` when an encode wrote it as a split (call it for an input without one); OutputTaken when files
    encode did not write are in it too; None when there is none or it is not encode's split. Every rank of a split
    encode looks, so that a refusal stops them all before any work, while rank 0 removes it (`remove_split`): a
    file that vanishes under another rank's look was encode's."""
    val = Path(output) / VAL_DIR
    try:
        if val.is_symlink() or not val.is_dir() or not _written_as_split(val):
            return None
        others = sorted(p.name + "/" * p.is_dir() for p in val.iterdir() if not _encodes(val, p) and _still(p))
    except FileNotFoundError:  # the folder itself went: rank 0 removed it
        return None
    if others:
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
    """Whether encode wrote `val` as the split it carried from its input: its index.json says so (`SPLIT`; one from
    before encode said so, where its source is the output's own source's `val/`), or, where a crash left none, the
    output's own index.json says it carried one (`CARRIES`) and encode's records or staging are there."""
    index = ShardIndex.readable(val)
    if index is not None and "split" in index.meta:
        return _by_encode(index) and _says(index.meta, SPLIT)
    carrier = _encodes_index(val.parent)
    if carrier is None:
        return False
    if index is not None:
        return _by_encode(index) and index.meta.get("source") == str(Path(carrier.meta.get("source", "")) / VAL_DIR)
    return _says(carrier.meta, CARRIES) and \
        any(p.name.endswith(RECORD_SUFFIX) or p.name.startswith(".encode-") for p in val.iterdir())


def _encodes_index(folder: Path) -> ShardIndex | None:
    """The index.json encode wrote with its shards in `folder`; None for none, or another's."""
    index = ShardIndex.readable(folder)
    return index if index is not None and _by_encode(index) else None


def _by_encode(index: ShardIndex) -> bool:
    return own_output(index) and writer_of(index) == "encode"


def _says(meta: dict, mark: dict) -> bool:
    return mark.items() <= meta.items()


def _encodes(val: Path, entry: Path) -> bool:
    """Whether encode wrote `entry` of `val`: a tar of its own (`may_write_over`), or one of its files beside them."""
    if entry.name.endswith(".tar") and not entry.name.startswith(".") and entry.is_file():
        return may_write_over("encode", val, entry.name)
    return BESIDE_SHARDS.fullmatch(entry.name) is not None and (entry.is_dir() == entry.name.startswith(".encode-"))


def _still(entry: Path) -> bool:
    """Whether `entry` is still there (rank 0 may be removing the split while another rank looks)."""
    return entry.is_symlink() or entry.exists()
