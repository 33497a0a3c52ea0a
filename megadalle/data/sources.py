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
every file. Manifests are read by manifests.py.
"""
from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections import Counter
from pathlib import Path

from megadalle.config.data import VAL_DIR
from megadalle.data.fields import IMAGE_FIELDS
from megadalle.data.index import compressed_note, is_compressed_tar, load_offsets, to_spans
from megadalle.data.ingest import open_index
from megadalle.data.ingest.dropped import dropped
from megadalle.data.items import InputError, Item
from megadalle.data.manifests import csv_rows, jsonl_rows, manifest_items
from megadalle.data.names import shown, shown_in
from megadalle.data.nested import nested_note, nested_tars
from megadalle.data.tar import walk

IMAGE_EXTENSIONS = tuple(f".{field}" for field in IMAGE_FIELDS)
"""Images of a folder input (any case): what PIL decodes among photo formats; a GIF gives its first frame."""
UNREAD_PHOTOS = (".heic", ".heif")
"""Photos PIL does not decode that users bring (an iPhone's default): named with a way to convert them."""
CAPTION_EXTENSION = ".txt"
"""A folder image's captions: the same stem with this suffix, in any case (`X.jpg` + `X.TXT`)."""
MANIFESTS = (".jsonl", ".csv")
EXPECTED = "expected a folder of images or of .tar shards, or a .jsonl / .csv manifest"


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
    hidden file or folder (`list_files`). Those come last, so they shift no image's key. The images of `<root>/val/`
    are held out, as a shard input's `val/` is: a folder laid out `train/` and `val/` had its validation images
    trained on, without a word."""
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
        relative = p.relative_to(root)
        items.append(Item(f"{len(items):09d}", p, shown(relative.as_posix()), caption_file=caption,
                          held_out=len(relative.parts) > 1 and relative.parts[0] == VAL_DIR))
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
        elif suffix in UNREAD_PHOTOS:
            problem = ("unrecognised_file", f"a {suffix[1:].upper()} photo (a phone's), which PIL does not read: "
                                            "convert it to JPEG (heif-convert, `magick mogrify -format jpg`, or a "
                                            "Mac's Preview) and prepare again")
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
