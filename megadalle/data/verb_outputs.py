"""Which verb wrote a shard folder, and which of its tars: what `prepare` and `encode` may write over, and what the
advice on a changed output may tell the user to rerun.

`prepare` names its shards `shard-NNNNNN.tar` (`shards.SHARD_PATTERN`) and records its image format in index.json's
meta; `encode` names each token shard after its input shard, records its dVAE's grid in the meta, and leaves beside
each shard its record, `<shard>.encoded.json` (written before the shard is renamed into place: `encode.py`). Both
remove index.json before they write, so a rerun after a crash finds only the shard names, the records and, for a tar
of encode's whose record is missing (an encode older than its records, crashed), its codes to tell its own shards by
(`may_write_over`).
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

from megadalle.data.fields import CODES_FIELD, split_member
from megadalle.data.index import ShardIndex

RECORD_SUFFIX = ".encoded.json"
PREPARE_SHARD = re.compile(r"shard-\d{6,}\.tar")
"""The names `prepare`'s writer gives its shards, and replaces or removes on a rerun."""


def record_path(shard: Path) -> Path:
    """`shard-000000.tar` -> `shard-000000.tar.encoded.json`, the record of what encoded it."""
    return shard.with_name(shard.name + RECORD_SUFFIX)


def writer_of(index: ShardIndex) -> str | None:
    """The verb that wrote a megadalle output, as its meta says (encode records its dVAE's grid, prepare its image
    format); None when it says neither."""
    return "encode" if "grid_size" in index.meta else "prepare" if "format" in index.meta else None


def writes(verb: str, root: Path, name: str) -> bool:
    """Whether the tar `name` (relative to `root`) is one `verb` wrote and replaces when rerun into `root`: for
    prepare a name of its writer, for encode a tar with its record beside it."""
    if verb == "prepare":
        return PREPARE_SHARD.fullmatch(name) is not None
    return record_path(root / name).is_file()


def may_write_over(verb: str, root: Path, name: str) -> bool:
    """Whether `verb` may write into `root` beside the tar `name`: one it wrote (`writes`), or for encode any tar of
    codes, which an encode wrote before its record (a crashed run, a split encode's other rank, an encode older than
    its records): refusing those would stop the very rerun that finishes the folder."""
    return writes(verb, root, name) or (verb == "encode" and first_sample_has(root / name, CODES_FIELD))


def first_sample_has(tar: Path, field: str) -> bool:
    """Whether the first sample of `tar` has `field` (its members up to the next sample's key, no more); False for
    a tar that cannot be read."""
    try:
        with tarfile.open(tar) as archive:
            key = None
            while (member := archive.next()) is not None:
                sample, name = split_member(member.name)
                if key is not None and sample != key:
                    return False
                key = sample
                if name == field:
                    return True
    except (OSError, tarfile.TarError):
        return False
    return False
