"""The CRC-32 of every record of a torch checkpoint file, checked before export or `load_run` maps it.

A torch `.pt` file is a zip archive whose records each carry the CRC-32 of their bytes, but torch.load never
checks them: a block zeroed or overwritten inside a file (a bad sector, a copy gone wrong, bit rot) loads as
silently wrong tensors, and checkpoint_damage.damage(), which judges a file by its size and its ends, cannot see it.
Training would not tell either: under ZeRO 1-2 the fp32 masters overwrite the module weights at resume, so a
damaged `mp_rank_00_model_states.pt` goes unnoticed until an export writes its weights out.

So every torch file that export and `load_run` read is streamed once through zlib's CRC-32, in chunks, before
it is memory-mapped: the process holds one chunk, and the bytes land in the page cache, where the mapped read
then finds them (a file that fits in free memory is read from disk once). A file is checked once per process
(`check_crc` remembers it by inode, size and mtime). Files without CRCs are not checked: torch's legacy
(pre-zip) format and safetensors (the EMA pieces).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from megadalle.train.checkpoint import CheckpointError

CHUNK = 16 << 20
_checked: set[tuple[int, int, int, int]] = set()


class DamagedRecord(CheckpointError):
    """A record of a torch file whose bytes do not match its CRC-32: the file was damaged after it was written."""


def crc_damage(file: Path) -> str | None:
    """Which record of the torch file `file` fails its CRC-32 (one line naming the file and the record), or None
    when every record matches (or `file` is no zip archive: a legacy torch file has no CRCs)."""
    if not zipfile.is_zipfile(file):
        return None
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            try:
                with archive.open(info) as record:
                    while record.read(CHUNK):
                        pass
            except (zipfile.BadZipFile, EOFError) as err:
                return f"{file} is damaged inside: record {info.filename} fails its check ({err})"
    return None


def check_crc(file: Path) -> None:
    """Raise DamagedRecord naming the damaged record of `file`; each version of a file is read once."""
    stat = os.stat(file)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return
    why = crc_damage(file)
    if why is not None:
        raise DamagedRecord(why)
    _checked.add(key)
