"""Walk a webdataset tar stream sample by sample: the one place that reads tar members.

A sample is the run of adjacent members sharing a key (`<key>.<field>`). Each comes with its
byte span in the stream (from its first header to the end of its last member's data, padding
included), which is what offset files store, and with the raw bytes of the fields asked for.
Links, directories and members without a field (`README`, macOS's `._x.jpg`) are skipped; nothing is
decoded here.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from megadalle.data.fields import split_member


@dataclass
class TarSample:
    key: str
    start: int
    """Offset of the sample's first member header."""
    end: int
    """Offset just past its last member's (padded) data."""
    names: list[str] = field(default_factory=list)
    """Every field the sample carries, in member order."""
    data: dict[str, bytes] = field(default_factory=dict)
    """Raw bytes of the wanted fields present."""
    repeated: list[str] = field(default_factory=list)
    """Fields met twice in the run: two samples of one key back to back, merged into one here (the later
    bytes would silently replace the earlier sample's), which readers must not take as one sample."""


def _member_end(info: tarfile.TarInfo) -> int:
    return info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def walk(stream: bytes | BinaryIO, wanted: set[str] | None = None, read: bool = True) -> Iterator[TarSample]:
    """Samples of a tar stream in order; `wanted=None` reads every field, `read=False` only the spans.

    Raises tarfile.ReadError (or EOFError) where the stream is cut; every sample yielded before is complete.
    """
    fileobj = io.BytesIO(stream) if isinstance(stream, (bytes, bytearray)) else stream
    current: TarSample | None = None
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for info in tar:
            key, name = split_member(info.name)
            if not info.isfile() or not name:
                continue
            if current is None or current.key != key:
                if current is not None:
                    yield current
                current = TarSample(key, info.offset, _member_end(info))
            if name in current.names:
                current.repeated.append(name)
            current.names.append(name)
            current.end = _member_end(info)
            if read and (wanted is None or name in wanted):
                current.data[name] = tar.extractfile(info).read()
    if current is not None:
        yield current


def members_end(fileobj: BinaryIO, offset: int) -> int:
    """The offset just past the last member from `offset` on, of any kind: where a whole tar's end-of-archive
    blocks start. `walk`'s last sample may be followed by members that are no sample (a README, a directory,
    a link), so its end alone cannot tell a complete tar from one cut after that sample."""
    fileobj.seek(offset)
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:  # offsets count from the stream's start, not `offset`
        for _ in tar:
            pass
        return tar.offset
