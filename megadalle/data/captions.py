"""The captions of a sample's `txt` field: its lines that hold visible text, stripped, one caption each.

One rule for every reader (`prepare` reading a caption file or an input shard, training's seeded choice of
caption, `evaluate`'s shard captions, the training sample grid): a blank or space-padded line is no caption
anywhere, so a grid never shows, and evaluate never scores, a caption the model did not learn from.

Lines end at "\\n", "\\r\\n" or a lone "\\r" only. `str.splitlines` also ends them at U+2028, U+2029, \\x85,
form feeds and \\x1c-\\x1e, which scraped captions carry inside a sentence: it cut one caption into fragments.
A line counts only if it holds a visible character (printable and not whitespace; `str.isprintable` is false
for every Unicode "Other" character, format characters (category Cf) included): a line of control characters or of
zero-width spaces and joiners (U+200B, U+2060, U+FEFF) is as empty as a blank one, and would teach the model an
image for no text.
"""
from __future__ import annotations

import re

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def visible(line: str) -> bool:
    """Whether `line` holds at least one character a reader sees."""
    return any(ch.isprintable() and not ch.isspace() for ch in line)


def caption_lines(text: str) -> list[str]:
    """The captions of a `txt` field, in order. A leading byte-order mark (a caption file saved by Notepad, put into a
    tar as it was) is not text: a folder's captions are read without it, a shard's kept it in the caption stored."""
    return [line.strip() for line in LINE_BREAK.split(text.removeprefix("\ufeff")) if visible(line)]


def first_caption(text: str) -> str:
    """The first caption of a `txt` field ("" when it has none)."""
    lines = caption_lines(text)
    return lines[0] if lines else ""
