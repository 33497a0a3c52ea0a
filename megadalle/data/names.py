"""Names read from the file system and from tars, which need not be UTF-8.

A POSIX name is bytes: a photo copied from an old Latin-1 or Windows system (`caf\\xe9.jpg`) or a tar written there
holds a name that is not valid UTF-8. Python reads it as a str holding each undecodable byte as a lone surrogate
(`surrogateescape`: os.walk, tarfile), which opens the file again but cannot be encoded as UTF-8: writing such a
name into report.json or a sample's json raised UnicodeEncodeError and stopped a whole `prepare`. Reports and
metadata hold it as text (`shown`). JSON brings in lone surrogates too (`"\\ud83d"`), in a manifest's caption or a shard's json.
"""
from __future__ import annotations

import re
from typing import Any

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def name_bytes(name: str) -> bytes:
    """The bytes `name` stands for: its UTF-8, each undecodable byte of a file or tar name back as it was read (a
    valid UTF-8 name gives exactly its UTF-8)."""
    return name.encode("utf-8", "surrogateescape")


def shown(text: str) -> str:
    """`text` as any report or json can hold it: valid UTF-8 as it is, each undecodable byte as `\\xNN`
    (`caf\\xe9.jpg`); a lone surrogate that stands for no byte (a JSON `"\\ud800"`) as `\\ud800`."""
    try:
        return name_bytes(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def valid_text(text: str) -> str:
    """`text` with each lone surrogate (JSON's `"\\ud83d"`: half an emoji, cut by a scraper) as U+FFFD, as a shard's
    txt is decoded: a manifest caption holding one stopped `prepare` when its shard was written."""
    return LONE_SURROGATE.sub("\ufffd", text)


def shown_in(value: Any) -> Any:
    """`value` (a report: dicts, lists and scalars) with every string in it `shown`."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown_in(key): shown_in(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown_in(item) for item in value]
    return value
