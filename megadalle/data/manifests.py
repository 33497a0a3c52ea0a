"""A `.jsonl` / `.csv` manifest as `prepare` reads it: its rows, one item per image (sources.py `find_items`).

A manifest is the user's table of captions: a string in it is ONE caption, whatever it holds (a CSV
cell quoted over several lines, a JSON string with "\n"), so its line breaks become spaces; a JSON
list gives several captions, and so do several rows naming one image (COCO-style manifests have a row
per caption): those rows are one sample holding their captions, its image read, resized and stored once
(its side of the validation split is its image's, `split.py`, whatever names it). A row whose shape or
types show it is not what the user meant (a CSV row with more or fewer fields than the header,
typically an unquoted comma; a caption that is an object or a number, far more often the wrong column
than a caption) is refused, not guessed at.
Text files are read as utf-8-sig: a byte-order mark (Excel's "CSV UTF-8", Notepad) is not data. A manifest row whose
bytes are not UTF-8 (one Latin-1 caption among millions) is a bad row, not a reason to refuse the manifest.
"""
from __future__ import annotations

import codecs
import csv
import json
import os
import re
import unicodedata
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

from megadalle.data.captions import caption_lines
from megadalle.data.items import InputError, Item
from megadalle.data.names import shown, valid_text

URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""An image named by a URL in a manifest (img2dataset's input): `Path` made `http:/host/x.jpg` of it."""
ESCAPED = re.compile("[\udc80-\udcff]")
"""What `surrogateescape` makes of the bytes of a CSV that are not UTF-8."""


class BadRow(ValueError):
    """A manifest row refused as bad_manifest_row; the message says why."""


class NotLocal(BadRow):
    """A manifest row naming its image by a URL: skipped as missing_file, the message says why."""


def jsonl_rows(path: Path, image_column: str, caption_column: str):
    """(line number, image value, caption value, problem or None) per non-blank line. A field that no row has is a
    wrong name, not a bad row each (rows of `text` were all skipped as blank captions, with no word of
    caption_column): InputError naming the rows' fields and the key to set, as a CSV's header does, once every row
    is read."""
    fields: dict[str, None] = {}  # the rows' fields, in order of first appearance
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, None, None, not_utf8_problem(raw, err, "row")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, None, None, f"bad JSON: {err}"
                continue
            if not isinstance(row, dict):
                yield number, None, None, "not a JSON object"
                continue
            fields.update(dict.fromkeys(row))
            absent = next((name for name in (image_column, caption_column) if name not in row), None)
            if absent is not None:  # not a blank caption: the row is written under other names
                yield number, None, None, f"no {absent!r} field (fields: {list(row)})"
                continue
            yield number, row[image_column], row[caption_column], None
    for name, key in ((image_column, "image_column"), (caption_column, "caption_column")):
        if fields and name not in fields:
            raise InputError(f"{path}: no row has a field {name!r} (fields: {list(fields)}); set {key}= to the right "
                             "one")


def not_utf8(raw: bytes, part: str) -> str:
    """A manifest row's problem when the bytes of its `part` are not UTF-8 (a Latin-1 caption): the first bad byte and
    where; empty when they are UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return not_utf8_problem(raw, err, part)
    return ""


def not_utf8_problem(raw: bytes, err: UnicodeDecodeError, part: str) -> str:
    """`not_utf8`'s problem for the decode error `err` of `raw`, for a caller that decoded it already."""
    return f"not UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the {part}); save the manifest as UTF-8"


CSV_FIELD_LIMIT = 2**31 - 1
"""The longest field a CSV manifest may hold: Python's default, 128 KiB, refused a whole manifest for one long
caption, which a folder's .txt or a JSONL row keeps."""


def other_separator(header: list[str]) -> str | None:
    """What to do of a CSV whose header reads as one column holding `;` or tabs (a spreadsheet saved in a locale that
    separates by `;`, or a TSV named .csv), which was told only to set image_column=; None for any other header."""
    if len(header) != 1:
        return None
    found = next((name for sign, name in ((";", "semicolons"), ("\t", "tabs")) if sign in header[0]), None)
    return None if found is None else (f"its columns are separated by {found}, and prepare reads commas: save it as "
                                       "comma-separated CSV (or as .jsonl)")


def csv_rows(path: Path, image_column: str, caption_column: str):
    """Like `jsonl_rows`, numbered by the line each row starts on (a quoted caption may span lines). Bytes that are not
    UTF-8 are read as lone surrogates (`surrogateescape`), so only their row is skipped, not the whole file."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        rows = numbered(csv.reader(f, strict=True))
        header = next(rows, (0, []))[1]
        for name, key in ((image_column, "image_column"), (caption_column, "caption_column")):
            if name not in header:
                raise InputError(f"{path}: no column {name!r} (columns: {header}); "
                                 + (other_separator(header) or f"set {key}= to the right one"))
        image, caption = header.index(image_column), header.index(caption_column)
        for number, row in rows:
            if not row:
                continue  # a blank line
            if bad := next(filter(None, (not_utf8(cell.encode("utf-8", "surrogateescape"), "field")
                                         for cell in row if ESCAPED.search(cell))), ""):
                yield number, None, None, bad
                continue
            if len(row) != len(header):
                yield number, None, None, (f"{len(row)} fields, header has {len(header)}; "
                                           f"quote captions containing commas")
                continue
            yield number, row[image], row[caption], None


def numbered(reader):
    """(the line it starts on, row) of each row of a strict csv `reader`. Strict: a caption that opened a quote and
    never closed it took every row after it into itself, in silence, up to the next stray quote or the file's end;
    csv.Error now names the line its row starts on (no row after it can be told apart, so the manifest is refused)."""
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise csv.Error(f"the row from line {start} on: {err}; a caption that starts with a quote must end with "
                            "one, and a quote inside a quoted caption is written twice (\"\")") from None
        yield start, row
        start = reader.line_num + 1


def one_caption(text: str) -> str:
    """A manifest string as one caption: its caption lines (`caption_lines`, as a folder's .txt is read) joined
    by spaces; a lone surrogate (JSON's "\\ud83d") as U+FFFD (`valid_text`)."""
    return " ".join(caption_lines(valid_text(text)))


def manifest_captions(value) -> tuple[str, ...]:
    """The captions of a manifest cell: none (null or absent), one (a string) or a list of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (one_caption(value),)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(one_caption(v) for v in value)
    kind = "a list holding non-strings" if isinstance(value, list) else "a number" \
        if isinstance(value, (int, float)) and not isinstance(value, bool) else f"a JSON {type(value).__name__}"
    raise BadRow(f"caption {json.dumps(value)[:60]} is {kind}; expected a string or a list of strings "
                 f"(quote a number meant as a caption)")


def manifest_items(manifest: Path, rows) -> list[Item]:
    """Items of manifest rows, one per image: a COCO-style manifest gives each image a row per caption, and an
    item per row stored one image as several samples (an epoch showed it once per caption). Rows naming the same
    file (its resolved path: `img/a.jpg`, `./img/a.jpg` and an absolute spelling are one image) become one item
    holding their captions in row order, at the place of the image's first row; a bad row stays an item of its own.
    A caption that one image's rows repeat is held once: a row pasted twice doubled that caption's share of the
    image's draws. Relative image paths are taken from the manifest's folder."""
    items: list[Item] = []
    groups: dict[Path, tuple[int, list[str]]] = {}  # resolved image path -> (its item's position, its captions)
    for number, image, caption, problem in rows:
        source = f"{shown(manifest.name)}:{number}"
        try:
            if problem is not None:
                raise BadRow(problem)
            if not isinstance(image, str) or not image.strip():
                raise BadRow("empty image path" if image is None or isinstance(image, str) else
                             f"image path {json.dumps(image)[:60]} is not a string")
            found = manifest_captions(caption)
            image = local_path(image)
            if URL.match(image):
                raise NotLocal(f"{json.dumps(image)[:80]} is a URL: prepare reads local files only; download the "
                               "images first (img2dataset downloads a manifest of URLs into shards, which prepare "
                               "and the loaders read)")
            path = spelt_on_disk(manifest.parent / image)
            resolved = resolve(path)
        except BadRow as err:
            reason = "missing_file" if isinstance(err, NotLocal) else "bad_manifest_row"
            items.append(Item(f"{len(items):09d}", manifest, source, problem=(reason, str(err))))
            continue
        if resolved not in groups:
            groups[resolved] = (len(items), [])
            items.append(Item(f"{len(items):09d}", path, f"{source}:{shown(image)}", captions=()))
        groups[resolved][1].extend(found)
    for at, found in groups.values():
        items[at] = replace(items[at], captions=tuple(dict.fromkeys(found)))
    return items


def local_path(image: str) -> str:
    """A `file://` URL's path (percent-escapes decoded, `file://localhost/` too), else `image` as written: a
    manifest written by a tool that names local files so had every row skipped as a URL to download."""
    parts = urllib.parse.urlsplit(image)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return image
    return urllib.request.url2pathname(parts.path)


def spelt_on_disk(path: Path) -> Path:
    """`path`, or its other Unicode form where only that one is there: a manifest written composed (`café.jpg`)
    named a file a Mac had written decomposed as missing, both printed alike."""
    if os.path.lexists(path):
        return path
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, str(path)))
        if os.path.lexists(other):
            return other
    return path


def resolve(path: Path) -> Path:
    """`path` absolute, without links or `..`; BadRow for a path the system cannot take (a NUL byte)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError) as err:
        raise BadRow(f"image path {json.dumps(str(path))[:60]}: {err}") from None
