"""What `prepare` reads: image-caption pairs from a folder, a JSONL / CSV manifest, or webdataset shards.

A folder holding `*.tar` shards (another `prepare`'s output, img2dataset's, any webdataset tars) is read
as shards: each indexed sample becomes an item (indexing tars written elsewhere first, see ingest/),
its image and `txt` read by the worker from the sample's byte span, then resized like any input; the
samples of its validation split (`<input>/val/`) too, which stay on that side. A
folder holding both tars and loose images is refused: which the user meant cannot be guessed, and
either guess drops data silently (or indexes tars the user never asked to have touched).

Listing is cheap and happens up front in the main process, in a fixed order (sorted paths for a
folder, file order for a manifest), so the shards come out the same whatever the number of worker
processes. Captions are read later, by the workers, together with the image. A manifest row that
cannot be parsed becomes an item that the worker skips with a reason, like any bad image; so does
every file of a folder that is neither an image nor a caption of one, so the report accounts for
every file.

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
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from megadalle.config.data import VAL_DIR
from megadalle.data.captions import caption_lines
from megadalle.data.fields import IMAGE_FIELDS
from megadalle.data.index import compressed_note, is_compressed_tar, load_offsets, to_spans
from megadalle.data.ingest import open_index
from megadalle.data.ingest.dropped import dropped
from megadalle.data.names import shown, shown_in, valid_text
from megadalle.data.nested import nested_note, nested_tars
from megadalle.data.tar import walk
from megadalle.errors import UserError

IMAGE_EXTENSIONS = tuple(f".{field}" for field in IMAGE_FIELDS)
"""Images of a folder input (any case): what PIL decodes among photo formats; a GIF gives its first frame."""
CAPTION_EXTENSION = ".txt"
"""A folder image's captions: the same stem with this suffix, in any case (`X.jpg` + `X.TXT`)."""
MANIFESTS = (".jsonl", ".csv")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""An image named by a URL in a manifest (img2dataset's input): `Path` made `http:/host/x.jpg` of it."""
ESCAPED = re.compile("[\udc80-\udcff]")
"""What `surrogateescape` makes of the bytes of a CSV that are not UTF-8."""
EXPECTED = "expected a folder of images or of .tar shards, or a .jsonl / .csv manifest"


class InputError(UserError, ValueError):
    """An `input=` that cannot be read as a whole (the CLI prints it as one line)."""


class BadRow(ValueError):
    """A manifest row refused as bad_manifest_row; the message says why."""


class NotLocal(BadRow):
    """A manifest row naming its image by a URL: skipped as missing_file, the message says why."""


@dataclass(frozen=True)
class Item:
    """One input pair. Exactly one of `captions` (manifest) and `caption_file` (folder) is set, or
    `problem` says why the row is unusable."""

    key: str
    """Shard key: the item's position in the input order, zero-padded (the same for a rerun on the same input)."""
    image: Path
    source: str
    """How the input names it (relative path or manifest line), for reports and metadata: as text (`names.shown`),
    so a name that is not UTF-8 shows its odd bytes as `\\xNN`."""
    captions: tuple[str, ...] | None = None
    caption_file: Path | None = None
    problem: tuple[str, str] | None = None
    """(reason, detail) for a row already known to be bad."""
    span: tuple[int, int] | None = None
    """For a shard sample: its byte span in the tar `image` (then image and caption are read from there)."""
    held_out: bool = False
    """From the input's own validation split (`<input>/val/`): held out again, whatever `val_fraction`."""


def shard_folders(root: Path) -> list[tuple[Path, bool]]:
    """The indexed folders of a shard input, each with whether its samples are held out: `root`, then its
    validation split `<root>/val/` when it has one (another `prepare`'s output): reading only the root's index lost
    them, and they stay held out, or a model would train on what it had been validated on."""
    val = root / VAL_DIR
    return [(root, False), *([(val, True)] if any(val.glob("*.tar")) else [])]


def shard_items(root: Path) -> list[Item]:
    """One item per indexed sample, in index order, of each of `shard_folders`."""
    items = []
    for folder, held_out in shard_folders(root):
        for path in open_index(folder).paths():
            name = path.relative_to(root).as_posix()
            for start, end in to_spans(load_offsets(path)):
                items.append(Item(f"{len(items):09d}", path, f"{shown(name)}@{start}", span=(int(start), int(end)),
                                  held_out=held_out))
    return items


def dropped_by_index(root: Path) -> Counter[str]:
    """The samples of a shard input that its indexes left out (`ingest.dropped`: read from neither), per reason."""
    return sum((dropped(folder) for folder, _ in shard_folders(root)), Counter())


def read_shard_sample(item: Item) -> tuple[bytes | None, str | None, dict]:
    """(image bytes, txt, origin) of a shard item, None for a field the sample lacks (runs in the worker).
    `origin` keeps what the input said of the sample, which the new key and metadata would otherwise drop:
    its key (`input_key`, `shown`: the sample's json must hold it) and its json (`input_json`, an img2dataset url,
    size, similarity...) when it parses."""
    with open(item.image, "rb") as f:
        f.seek(item.span[0])
        data = f.read(item.span[1] - item.span[0])
    sample = next(walk(data, {*IMAGE_FIELDS, "txt", "json"}))
    image = next((sample.data[name] for name in IMAGE_FIELDS if name in sample.data), None)
    txt = sample.data.get("txt")
    origin: dict = {"input_key": shown(sample.key)}
    if "json" in sample.data:
        try:
            origin["input_json"] = shown_in(json.loads(sample.data["json"]))  # "\ud83d" stopped the writer
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # metadata that does not parse is the input's business; the image and caption still are
    return image, None if txt is None else txt.decode("utf-8", errors="replace"), origin


def find_items(input: str | Path, image_column: str = "image", caption_column: str = "caption") -> list[Item]:
    """Items of a shard folder, an image folder (recursive) or a .jsonl / .csv manifest; InputError if `input`
    is none of these, or holds nothing (no output is made for it)."""
    path = Path(input)
    if path.is_dir():
        tars, nested = sorted(path.glob("*.tar")), nested_tars(path)
        if not tars:
            items = folder_items(path)
            if not items:
                raise InputError(f"input={str(input)!r}: an empty folder (no file in it or below); {EXPECTED}")
            meant = compressed_note(path) or (nested and nested_note(path, nested))
            if meant and all(item.problem for item in items):  # no image: the tars were meant
                raise InputError(f"input={str(input)!r}: {meant}")
            return items
        images = sum(1 for p in list_files(path)[0] if p.suffix.lower() in IMAGE_EXTENSIONS)
        if images:
            raise InputError(f"input={str(input)!r}: holds {images} images and {len(tars)} *.tar files "
                             f"({tars[0].name}{', ...' if len(tars) > 1 else ''}); a folder is read as images with "
                             f"captions or as shards, not both: move the .tar files out to prepare the images, "
                             f"or the images out to prepare the shards")
        if nested:
            raise InputError(f"input={str(input)!r}: {nested_note(path, nested)}")
        return shard_items(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in MANIFESTS:
        try:
            rows = jsonl_rows if suffix == ".jsonl" else csv_rows
            items = manifest_items(path, rows(path, image_column, caption_column))
        except csv.Error as err:
            raise InputError(f"input={str(input)!r}: not a readable {suffix} file ({err})") from None
        if not items:
            raise InputError(f"input={str(input)!r}: a manifest without rows")
        return items
    if not path.exists():
        raise InputError(f"input={str(input)!r}: does not exist; {EXPECTED}")
    kind = f"a {suffix} file" if suffix else "a file without an extension"
    raise InputError(f"input={str(input)!r}: {kind} is not a manifest prepare reads; {EXPECTED} "
                     f"(JSON: one object per line in a .jsonl file)")


def list_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(every file under `root`, a link to a file included; the hidden files and folders left out), each sorted. A
    linked folder is entered, as users link image folders in from other disks (`Path.rglob` skips it, and its pairs
    were lost without a word); each real folder once, so a link back up to an ancestor cannot loop and two links to
    one folder give no duplicates. A name that starts with `.` is not read (nor a hidden folder entered): a Mac's
    `._IMG_1.jpg` twins beside every file copied to a shared disk were paired as images with captions, and the
    images deleted into `.Trash-1000/` or saved into `.ipynb_checkpoints/` were trained on."""
    files, hidden, seen = [], [], set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        hidden.extend(Path(folder, name) for name in (*dirs, *names) if name.startswith("."))
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        files.extend(Path(folder, name) for name in names if not name.startswith("."))
    return sorted(files), sorted(hidden)


def nfc(name: str) -> str:
    """`name` in Unicode's composed form: a Mac writes `café.jpg` decomposed (e + U+0301), a script its `café.txt`
    composed; the two printed alike and did not pair (missing_caption beside orphan_caption)."""
    return unicodedata.normalize("NFC", name)


def folder_items(root: Path) -> list[Item]:
    """Every image under `root` with its same-stem caption beside it, sorted by relative path; then one
    item to skip per file that is neither (unrecognised_file), per caption no image has (orphan_caption) and per
    hidden file or folder (`list_files`). Those come last, so they shift no image's key."""
    files, hidden = list_files(root)
    captions: dict[tuple[Path, str], list[Path]] = {}
    for p in files:
        if p.suffix.lower() == CAPTION_EXTENSION:
            captions.setdefault((p.parent, nfc(p.stem)), []).append(p)
    items, used, imaged = [], set(), {}
    for p in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
        # the exact name first, should `X.txt` and `X.TXT` (or two forms of one name) be there: the other is an orphan
        found = sorted(captions.get((p.parent, nfc(p.stem)), []),
                       key=lambda c: (c.stem != p.stem, c.suffix != CAPTION_EXTENSION))
        caption = found[0] if found else p.with_suffix(CAPTION_EXTENSION)
        used.add(caption)
        imaged[(p.parent, nfc(p.stem))] = (p.name, caption.name)
        name = p.relative_to(root).as_posix()
        items.append(Item(f"{len(items):09d}", p, shown(name), caption_file=caption))
    for p in files:
        suffix = p.suffix.lower()
        if suffix == CAPTION_EXTENSION and p not in used and (p.parent, nfc(p.stem)) in imaged:
            image, caption = imaged[(p.parent, nfc(p.stem))]
            problem = ("orphan_caption", f"{image}'s caption is {caption}; this one is not read")
        elif suffix == CAPTION_EXTENSION and p not in used:
            problem = ("orphan_caption", f"no image named {p.stem}{{{','.join(IMAGE_EXTENSIONS)}}} beside it")
        elif is_compressed_tar(p.name):
            problem = ("unrecognised_file", "a compressed tar, which megadalle does not read: decompress it into a "
                                            "plain .tar, in a folder of tars (read as shards) without images")
        elif suffix == ".tar":  # tars at the top would make the folder one of shards
            problem = ("unrecognised_file", "a tar in a subfolder of an image folder, not read: prepare reads a "
                                            "folder of images, or one folder of .tar shards (pass that folder as "
                                            "input)")
        elif suffix not in (*IMAGE_EXTENSIONS, CAPTION_EXTENSION):
            problem = ("unrecognised_file", f"neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
                                            f"{CAPTION_EXTENSION} caption")
        else:
            continue
        name = p.relative_to(root).as_posix()
        items.append(Item(f"{len(items):09d}", p, shown(name), problem=problem))
    for p in hidden:
        what = "folder" if p.is_dir() else "file"
        items.append(Item(f"{len(items):09d}", p, shown(p.relative_to(root).as_posix()), problem=(
            "hidden", f"a hidden {what} (its name starts with '.'), not read: rename it to prepare what it holds")))
    return items


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


def csv_rows(path: Path, image_column: str, caption_column: str):
    """Like `jsonl_rows`, numbered by the line each row starts on (a quoted caption may span lines). Bytes that are not
    UTF-8 are read as lone surrogates (`surrogateescape`), so only their row is skipped, not the whole file."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        rows = numbered(csv.reader(f, strict=True))
        header = next(rows, (0, []))[1]
        for name, key in ((image_column, "image_column"), (caption_column, "caption_column")):
            if name not in header:
                raise InputError(f"{path}: no column {name!r} (columns: {header}); set {key}= to the right one")
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
