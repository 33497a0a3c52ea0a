"""One input pair -> one shard sample, or a skip with a reason. Runs in `prepare`'s worker processes.

Every failure a real scrape contains maps to one reason (the report counts them), and no exception
escapes `convert`: one bad file must never stop the good ones. Checks go cheapest first (file size,
caption, image header) so a bad input costs no pixel decoding.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from megadalle.data.captions import caption_lines
from megadalle.data.images import draft_for, resize_center_crop, to_rgb, upright_size, upscaled
from megadalle.data.sources import Item, read_shard_sample
from megadalle.data.split import image_digest

REASONS = ("missing_file", "empty_file", "unreadable", "missing_caption", "empty_caption", "not_an_image",
           "decompression_bomb", "too_small", "extreme_aspect", "truncated", "bad_manifest_row", "unrecognised_file",
           "orphan_caption", "caption_not_utf8", "hidden")


@dataclass(frozen=True)
class ConvertOptions:
    image_size: int
    format: str = "jpg"
    quality: int = 95
    min_side: int = 64
    max_pixels: int = 89_478_485
    max_aspect: float | None = None


HEAVY_CROP_ASPECT = 2.0
"""Long side / short side above which the centre crop to a square keeps less than half the image."""


CAPTION_ENCODING_NOTE = ("caption files are read as UTF-8 text; convert them and prepare again (from Windows-1252, "
                         "say: iconv -f cp1252 -t utf-8 in.txt > out.txt; report.json names each file)")
"""A folder's captions in another encoding (Latin-1, Windows-1252, Shift JIS) are not guessed: a wrong guess trains on
mojibake in silence. The summary says how to convert them instead."""


def skip_notes(opts: ConvertOptions) -> dict[str, str]:
    """{reason: the key and value that decide it (or the file format), and how to keep such inputs}, for the
    summary: a run that skipped every 32 px image as too_small at image_size=32 said nothing of min_side=64."""
    if opts.min_side > opts.image_size:
        keep = (f"min_side={opts.min_side} is above image_size={opts.image_size}: set min_side={opts.image_size} to "
                f"keep images of {opts.image_size} px and up")
    else:
        keep = f"set a lower min_side to keep them (upscaled to image_size={opts.image_size}, which adds no detail)"
    return {"too_small": f"short side below min_side={opts.min_side}; {keep}",
            "extreme_aspect": f"long side over max_aspect={opts.max_aspect} times the short side; set a higher "
                              "max_aspect (or null) to keep them, centre-cropped to a square",
            "caption_not_utf8": CAPTION_ENCODING_NOTE,
            "decompression_bomb": f"more than max_pixels={opts.max_pixels} pixels; set a higher max_pixels to keep "
                                  "them (each is decoded whole in memory, ~3 bytes a pixel)",
            "hidden": "files and folders whose names start with '.' (a Mac's ._ twins, .DS_Store, .Trash-*) are not "
                      "read; rename one to prepare what it holds"}



def crop_note(opts: ConvertOptions) -> str:
    """The summary's word on kept images that the centre crop cut to under half their area (a panorama keeps its
    middle under a caption for the whole scene), and the key that skips them instead."""
    return (f"centre-cropped to under half their area (long side over {HEAVY_CROP_ASPECT:g}x the short); "
            f"max_aspect={'null' if opts.max_aspect is None else opts.max_aspect} (set max_aspect="
            f"{HEAVY_CROP_ASPECT:g} to skip them as extreme_aspect)")


def upscale_note(opts: ConvertOptions) -> str:
    """The summary's word on kept images smaller than image_size (enlarged: a blurry target), and the key that skips
    them instead."""
    return (f"upscaled to image_size={opts.image_size} (short side below it, which adds no detail); "
            f"min_side={opts.min_side} (set min_side={opts.image_size} to skip them as too_small)")


@dataclass
class Result:
    key: str
    source: str
    digest: bytes = b""
    """SHA-256 of the source image's bytes (`split.image_digest`): its side of the validation split, and what tells
    exact duplicates (`duplicates.py`); empty for a skipped input."""
    held_out: bool = False
    """From the input's own validation split, so held out again (`Item.held_out`)."""
    sample: dict[str, Any] | None = None
    heavy_crop: bool = False
    """The kept image lost more than half its area to the centre crop (HEAVY_CROP_ASPECT)."""
    upscaled: bool = False
    """The kept image's short side was below image_size (`images.upscaled`)."""
    reason: str | None = None
    detail: str = ""
    warnings: tuple[str, ...] = ()
    """What the decoders warned of while reading this input (PIL's "Corrupt EXIF data", "Tag data larger than file"),
    each once: printed as they came, from a worker, they named no file."""


class Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


def read_captions(item: Item) -> tuple[str, ...]:
    """The captions of a folder or manifest item (`caption_lines`: the lines with visible text)."""
    if item.captions is not None:
        text = "\n".join(item.captions)  # one line each already (`manifests.one_caption`)
    else:
        if item.caption_file is None or not item.caption_file.is_file():
            name = item.caption_file.name if item.caption_file else "caption"
            there = item.caption_file is not None and item.caption_file.is_dir()
            raise Skip("missing_caption", f"{name} beside the image is a folder" if there else
                       f"no {name} beside the image")
        try:
            text = item.caption_file.read_text(encoding="utf-8-sig")  # a BOM is not text
        except UnicodeDecodeError as err:
            raise Skip("caption_not_utf8", f"caption file: {err}") from None
        except OSError as err:
            raise Skip("unreadable", f"caption file: {err}") from None
    captions = tuple(caption_lines(text))
    if not captions:
        raise Skip("empty_caption", "the caption is blank (no line holds a visible character)")
    return captions


def read_shard_item(item: Item) -> tuple[bytes, tuple[str, ...], dict]:
    """Image bytes, caption lines and origin (`read_shard_sample`) of a sample of an input shard."""
    try:
        image, txt, origin = read_shard_sample(item)
    except Exception as err:  # the tar changed or is cut since it was indexed
        raise Skip("unreadable", f"{type(err).__name__}: {err}") from None
    if image is None:
        raise Skip("missing_file", "the sample has no image field")
    captions = tuple(caption_lines(txt or ""))
    if not captions:
        raise Skip("missing_caption" if txt is None else "empty_caption", "no usable txt field")
    return image, captions, origin


def read_bytes(item: Item) -> bytes:
    try:
        if not item.image.is_file():
            raise Skip("missing_file", f"{item.image} does not exist")
        if os.path.getsize(item.image) == 0:
            raise Skip("empty_file", "zero bytes")
        return item.image.read_bytes()
    except OSError as err:
        raise Skip("unreadable", str(err)) from None


def open_image(data: bytes, opts: ConvertOptions) -> tuple[Image.Image, tuple[int, int]]:
    """Decode header then pixels, mapping PIL's failures to reasons; also the original size, upright (draft
    shrinks it; an EXIF rotation swaps it). The header is read without PIL's pixel limit, and its size held against
    max_pixels here: PIL's own refusal called a 108-megapixel phone photo a "decompression bomb DOS attack", at a
    limit twice the one set past its warning level."""
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the header only: no pixel is decoded before the check below
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Skip("not_an_image", "no image decoder recognises the bytes") from None
    except Exception as err:  # a decoder that accepts the signature but fails on the header
        raise Skip("unreadable", f"{type(err).__name__}: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    w, h = img.size
    if w * h > opts.max_pixels:
        raise Skip("decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels={opts.max_pixels}")
    if min(w, h) < opts.min_side:
        raise Skip("too_small", f"{w}x{h}: short side < min_side={opts.min_side}")
    if opts.max_aspect is not None and max(w, h) / min(w, h) > opts.max_aspect:
        raise Skip("extreme_aspect", f"{w}x{h}: long side over max_aspect={opts.max_aspect} times the short side")
    try:
        size = upright_size(img)  # before the draft shrinks it; a PNG's EXIF may follow its pixels, read to the end
        draft_for(img, opts.image_size)
        img.load()
    except Exception as err:  # OSError "image file is truncated", SyntaxError "broken PNG file", zlib errors
        raise Skip("truncated", f"pixel data incomplete or corrupt: {type(err).__name__}: {err}") from None
    return img, size


def encode_image(img: Image.Image, opts: ConvertOptions) -> bytes:
    buf = io.BytesIO()
    if opts.format == "png":
        img.save(buf, "PNG", optimize=False)
    else:
        img.save(buf, "JPEG", quality=opts.quality, subsampling=0 if opts.quality >= 90 else 2)
    return buf.getvalue()


def convert(item: Item, opts: ConvertOptions) -> Result:
    """The sample for `item` (image, txt, json), or a Result whose `reason` says why it was skipped."""
    result = Result(item.key, item.source, held_out=item.held_out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _convert_into(result, item, opts)
    result.warnings = tuple(dict.fromkeys(str(w.message) for w in caught))
    return result


def _convert_into(result: Result, item: Item, opts: ConvertOptions) -> None:
    try:
        if item.problem is not None:
            raise Skip(*item.problem)
        if item.span is not None:
            data, captions, origin = read_shard_item(item)
        else:
            data, captions, origin = read_bytes(item), read_captions(item), {}
        img, (width, height) = open_image(data, opts)
        source_format = img.format
        out = resize_center_crop(to_rgb(img), opts.image_size)
        meta = {"source": item.source, "width": width, "height": height, "format": source_format,
                "captions": len(captions), **origin}
        result.heavy_crop = max(width, height) / min(width, height) > HEAVY_CROP_ASPECT
        result.upscaled = upscaled((width, height), opts.image_size)
        result.digest = image_digest(data)
        result.sample = {"__key__": item.key, opts.format: encode_image(out, opts), "txt": "\n".join(captions),
                         "json": meta}
    except Skip as skip:
        result.reason, result.detail = skip.reason, skip.detail
    except Exception as err:  # anything unforeseen still only skips this one input
        result.reason, result.detail = "unreadable", f"{type(err).__name__}: {err}"
