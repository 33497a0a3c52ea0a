"""`prepare` and `encode` write only into a new folder or over their own earlier output, refused otherwise before any
work.

Each used to write over whatever the folder held. prepare into encode's output replaced token shards with image
shards and left encode's records beside them; encode then trusted such a record, skipped the shard and published an
index.json calling image shards token shards, and train failed on a missing codes.npy. encode into another data set's
prepared folder replaced its images with codes, with only a "re-encoding" note. And a tar of the user's beside
prepare's shards made a folder no reader takes (its index.json does not list the tar), whose advice, to rerun prepare
into it, gave the same folder again. So an output holding the other verb's shards, or tars the verb did not write, is
refused in one line that names what is there and the way out (`verb_outputs.py` says how the writers are told apart).
"""
from __future__ import annotations

from pathlib import Path

from megadalle.data.coverage import own_output, shown_names
from megadalle.data.index import INDEX_NAME, ShardIndex
from megadalle.data.verb_outputs import RECORD_SUFFIX, may_write_over, writer_of
from megadalle.errors import UserError

OTHER = {"prepare": "encode", "encode": "prepare"}
KIND = {"prepare": "image shards", "encode": "token shards"}


class OutputTaken(UserError, FileExistsError):
    """An output folder holding what the verb about to write there did not write: writing would lose or mislabel it."""


def check_output(output: str | Path, verb: str) -> None:
    """OutputTaken unless the folder `output` of `verb` ("prepare" or "encode") is absent or holds nothing but the
    verb's own shards among the shard files (other files, such as notes, stay and do not matter)."""
    root = Path(str(output))
    if not root.is_dir():
        return
    index = ShardIndex.readable(root)
    if evidence := _other_verbs_shards(root, index, verb):
        raise OutputTaken(f"output={output} holds {KIND[OTHER[verb]]} written by `megadalle {OTHER[verb]}` "
                          f"({evidence}), which {verb} would replace with {KIND[verb]}; give another output=, or "
                          "remove them from it first")
    if strays := _foreign_tars(root, index, verb):
        indexed = index is not None and not own_output(index)
        elsewhere = ", indexed by `megadalle index` as tars written elsewhere" if indexed else ""
        them = "them" if len(strays) > 1 else "it"
        raise OutputTaken(f"output={output} holds {len(strays)} tar{'s' * (len(strays) > 1)} that {verb} did not "
                          f"write ({shown_names(strays)}{elsewhere}): {verb} writes only into a new folder or over "
                          f"its own earlier output; give another output=, or move {them} out of it")


def _other_verbs_shards(root: Path, index: ShardIndex | None, verb: str) -> str:
    """What shows that the other verb wrote into `root`, in words; empty when nothing does."""
    found = []
    if index is not None and own_output(index) and writer_of(index) == OTHER[verb]:
        keys = ("grid_size", "vocab_size") if verb == "prepare" else ("format", "image_size")
        found.append(f"{INDEX_NAME} with " + ", ".join(f"{k}={index.meta[k]}" for k in keys if k in index.meta))
    records = sorted(root.glob("*" + RECORD_SUFFIX))
    if verb == "prepare" and records:
        found.append(f"{len(records)} <shard>{RECORD_SUFFIX} record{'s' * (len(records) > 1)}")
    return "; ".join(found)


def _foreign_tars(root: Path, index: ShardIndex | None, verb: str) -> list[str]:
    """The tars in `root` that `verb` did not write: all of those an index of `megadalle index` covers, else those
    not its own (`verb_outputs.may_write_over`)."""
    tars = sorted(p.name for p in root.glob("*.tar") if not p.name.startswith(".") and p.is_file())
    if index is not None and not own_output(index):
        return tars
    return [name for name in tars if not may_write_over(verb, root, name)]
