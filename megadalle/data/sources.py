"""What `prepare` reads: image-caption pairs from a folder, a JSONL / CSV manifest, or webdataset shards.

A folder holding `*.tar` shards (another `prepare`'s output, img2dataset's, any webdataset tars) is read
as shards: each indexed sample becomes an item (indexing tars written elsewhere first, see ingest.py),
its image and `txt` read by the worker from the sample's byte span, then resized like any input.

Listing is cheap and happens up front in the main process, in a fixed order (sorted paths for a
folder, file order for a manifest), so the shards come out the same whatever the number of worker
processes. Captions are read later, by the workers, together with the image. A manifest row that
cannot be parsed becomes an item that the worker skips with a reason, like any bad image.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from megadalle.data.fields import IMAGE_FIELDS
from megadalle.data.index import load_offsets, to_spans
from megadalle.data.ingest import open_index
from megadalle.data.tar import walk

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Item:
    """One input pair. Exactly one of `captions` (manifest) and `caption_file` (folder) is set, or
    `problem` says why the row is unusable."""

    key: str
    """Shard key: the item's position in the input order, zero-padded (stable across reruns)."""
    image: Path
    source: str
    """How the input names it (relative path or manifest line), for reports and metadata."""
    captions: tuple[str, ...] | None = None
    caption_file: Path | None = None
    problem: tuple[str, str] | None = None
    """(reason, detail) for a row already known to be bad."""
    span: tuple[int, int] | None = None
    """For a shard sample: its byte span in the tar `image` (then image and caption are read from there)."""


def is_shard_dir(path: Path) -> bool:
    """A folder of webdataset shards rather than of images."""
    return path.is_dir() and any(path.glob("*.tar"))


def shard_items(root: Path) -> list[Item]:
    """One item per indexed sample, in index order."""
    items = []
    for path in open_index(root).paths():
        for start, end in to_spans(load_offsets(path)):
            items.append(Item(f"{len(items):09d}", path, f"{path.name}@{start}", span=(int(start), int(end))))
    return items


def read_shard_sample(item: Item) -> tuple[bytes | None, str | None]:
    """(image bytes, txt) of a shard item, None for a field the sample lacks (runs in the worker)."""
    with open(item.image, "rb") as f:
        f.seek(item.span[0])
        data = f.read(item.span[1] - item.span[0])
    sample = next(walk(data, {*IMAGE_FIELDS, "txt"}))
    image = next((sample.data[name] for name in IMAGE_FIELDS if name in sample.data), None)
    txt = sample.data.get("txt")
    return image, None if txt is None else txt.decode("utf-8", errors="replace")


def find_items(input: str | Path, image_column: str = "image", caption_column: str = "caption") -> list[Item]:
    """Items of a shard folder, an image folder (recursive) or a .jsonl / .csv manifest; raises if `input` is none."""
    path = Path(input)
    if is_shard_dir(path):
        return shard_items(path)
    if path.is_dir():
        return folder_items(path)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".csv"):
        reader = jsonl_rows if path.suffix.lower() == ".jsonl" else csv_rows
        return manifest_items(path, reader(path, image_column, caption_column))
    raise FileNotFoundError(f"input={str(input)!r}: expected a folder of images or of .tar shards, "
                            f"or a .jsonl / .csv manifest")


def folder_items(root: Path) -> list[Item]:
    """Every image under `root` with its same-stem .txt beside it, sorted by relative path."""
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    return [Item(f"{i:09d}", p, p.relative_to(root).as_posix(), caption_file=p.with_suffix(".txt"))
            for i, p in enumerate(images)]


def jsonl_rows(path: Path, image_column: str, caption_column: str):
    """(line number, image value, caption value, problem or None) per non-blank line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, None, None, f"bad JSON: {err}"
                continue
            if not isinstance(row, dict) or image_column not in row:
                yield number, None, None, f"not an object with an {image_column!r} field"
                continue
            yield number, row[image_column], row.get(caption_column), None


def csv_rows(path: Path, image_column: str, caption_column: str):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (image_column, caption_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (columns: {reader.fieldnames}); "
                             f"set image_column / caption_column")
        for number, row in enumerate(reader, 2):
            yield number, row[image_column], row[caption_column], None


def manifest_items(manifest: Path, rows) -> list[Item]:
    """Items of manifest rows; relative image paths are taken from the manifest's folder."""
    items = []
    for i, (number, image, caption, problem) in enumerate(rows):
        source = f"{manifest.name}:{number}"
        key = f"{i:09d}"
        if problem is None and (image is None or not str(image).strip()):
            problem = "empty image path"
        if problem is not None:
            items.append(Item(key, manifest, source, problem=("bad_manifest_row", problem)))
            continue
        image_path = manifest.parent / str(image)
        captions = caption if isinstance(caption, list) else [] if caption is None else [str(caption)]
        lines = tuple(line for c in captions for line in str(c).splitlines())
        items.append(Item(key, image_path, f"{source}:{image}", captions=lines))
    return items
