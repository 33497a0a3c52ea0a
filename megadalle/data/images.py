"""Image geometry shared by `prepare` (once, offline) and the loaders (only if sizes differ)."""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps

from megadalle.config.override import command_line


TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the image a quarter (`exif_transpose` swaps its width and height)."""


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as the image is shown, after its EXIF rotation: what `to_rgb` makes of it. PIL's TIFF reader
    turns a TIFF upright itself, its size from the header on: swapped again, its json's width and height were."""
    w, h = img.size
    if img.format == "TIFF":
        return w, h
    return (h, w) if img.getexif().get(ExifTags.Base.Orientation) in TRANSPOSED_ORIENTATIONS else (w, h)


def draft_for(img: Image.Image, size: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the short side stays >= size (much faster)."""
    if img.format == "JPEG":
        w, h = img.size
        scale = size / min(w, h)
        img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))


DEEP_GREY_SCALE = {"I;16": 1 / 257, "I;16L": 1 / 257, "I;16B": 1 / 257, "I;16N": 1 / 257, "I": 1 / 257, "F": 255.0}
"""Factor to 8 bits of the greyscale modes PIL keeps deeper than 8 bits (its own `convert` clips them
at 255, so all but the darkest pixels come out white). 16-bit files (PNG, TIFF) open as I;16*: 65535
maps to 255. Mode I (32-bit) is what PIL makes of 16-bit data in older versions and in many TIFFs,
so it is read on the same 0..65535 scale. Float images (mode F, TIFF float samples) follow the
float image convention of 0..1. Values outside either range clip; NaN becomes 0."""


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB", "LA": "RGBA"}
"""Modes whose embedded colour profile is applied, and the mode each converts to (alpha kept, composited later)."""


def to_srgb(img: Image.Image) -> Image.Image:
    """The pixels in sRGB when the file embeds a colour profile (Display-P3 phone photos, Adobe RGB,
    print CMYK JPEGs): read as sRGB, their colours come out wrong. A profile littleCMS cannot read or
    apply leaves the pixels as they are (the colours are then what they were before, not a skipped file).
    Either way the result names no profile: its pixels are read as sRGB, and a PNG written from it
    must not carry the old profile to be applied a second time when read back."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    if img.mode == "P" or (img.mode == "RGB" and "transparency" in img.info):
        img = img.convert("RGBA")  # palette colours, or a colour key, in the profile's RGB: the key becomes alpha
    if img.mode in ICC_MODES and "transparency" not in img.info:  # a grey key is in the old space
        try:
            img = ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
                                            outputMode=ICC_MODES[img.mode])
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    img.info = {key: value for key, value in img.info.items() if key != "icc_profile"}
    return img


def deep_grey_to_8_bits(img: Image.Image) -> Image.Image:
    """"L", or "LA" when the file names a transparent grey value: that value is matched at full depth
    (after scaling, other greys would share it), and the new image carries no `info` to say it."""
    arr = np.asarray(img)
    scaled = np.nan_to_num(arr.astype(np.float64) * DEEP_GREY_SCALE[img.mode])
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if "transparency" not in img.info:
        return grey
    alpha = Image.fromarray(np.where(arr != img.info["transparency"], 255, 0).astype(np.uint8), "L")
    return Image.merge("LA", (grey, alpha))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, in sRGB, with transparency composited on white (black would be an artefact the model learns).

    The one conversion of every decoded image: `prepare` and the shard readers (fields.py) both call
    it, so an image gives the same pixels whichever path reads it."""
    img = to_srgb(ImageOps.exif_transpose(img))
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in DEEP_GREY_SCALE:
        img = deep_grey_to_8_bits(img)
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def upscaled(size: tuple[int, int], image_size: int) -> bool:
    """Whether an image of `size` (width, height) is enlarged to reach `image_size`: its short side is below it.
    An upscaled image adds no detail (a thumbnail becomes a blurry target), so every path that resizes counts them."""
    return min(size) < image_size


def upscaled_message(source: object, count: int, total: int, image_size: int, images: str, cost: str) -> str:
    """What to say when `count` of `total` `images` (e.g. "real images") read from `source` were `upscaled`: the
    `cost` of the blurry result (e.g. "a blurry target") and the `megadalle index` that skips such thumbnails."""
    index = command_line("index", dir=source, min_side=image_size)
    return (f"{source}: {count} of the {total} {images} were smaller than the dVAE's input ({image_size} px) and "
            f"upscaled to it, {cost}; `{index}` skips them in tars from elsewhere")


REDUCING_GAP = 3.0
"""PIL's `reducing_gap`: a downscale by 3x or more first averages whole blocks of pixels (`Image.reduce`), fast and
as good as bicubic all the way."""
BICUBIC_SUPPORT = 2
"""Half-width of PIL's bicubic kernel in output pixels (in source pixels, times the downscale factor)."""
RESIZE_TOLERANCE = 2
"""How many grey levels `resize_center_crop` may differ from resizing the whole image and cutting the square."""


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale so the short side is `size` (bicubic, antialiased), then cut the centred square.

    Only the square is computed: resizing the whole image first made a 1x100000 strip (a PNG of a few hundred bytes,
    which max_pixels lets through) a 32x3200000 image at 32 px (300 MB; 20 GB at 256 px) before the crop threw nearly
    all of it away.
    The pixels are within `RESIZE_TOLERANCE` grey levels of the whole resize's, made as PIL makes them: its blocks
    averaged from the corner, then one pass per axis, in PIL's order (`rows_first`), each a one-axis `box=` resize of
    the source the square needs (`needed_span`), cut first. Each output pixel reads the source pixels the whole resize
    reads, but PIL takes a box's corners in float32: from the square's corner rather than the image's, a weight can
    round otherwise, and the 8 bits kept between the passes turn that into a grey level, rarely two (measured on
    noise, line art and photographs, tests/data/test_resize.py)."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    fx, fy = int(w / nw / REDUCING_GAP) or 1, int(h / nh / REDUCING_GAP) or 1
    if fx > 1 or fy > 1:
        img = img.reduce((fx, fy))
    sx, sy = w / fx / nw, h / fy / nh  # (reduced) source pixels per output pixel, as PIL's whole resize has them
    left, top = (nw - size) // 2, (nh - size) // 2
    x0, x1 = needed_span(left * sx, (left + size) * sx, sx, img.width)
    y0, y1 = needed_span(top * sy, (top + size) * sy, sy, img.height)
    src = img.crop((x0, y0, x1, y1))
    cx0, cx1 = left * sx - x0, (left + size) * sx - x0  # the square's columns in `src`
    cy0, cy1 = top * sy - y0, (top + size) * sy - y0  # and its rows
    bicubic = Image.Resampling.BICUBIC
    if rows_first(img.size, (nw, nh)):
        src = src.resize((src.width, size), bicubic, box=(0, cy0, src.width, cy1))
        return src.resize((size, size), bicubic, box=(cx0, 0, cx1, size))
    src = src.resize((size, src.height), bicubic, box=(cx0, 0, cx1, src.height))
    return src.resize((size, size), bicubic, box=(0, cy0, size, cy1))


def rows_first(source: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether PIL's resize of `source` (width, height) to `target` runs its vertical pass first: where the height
    loses more than twice as many pixels as the width (Pillow's ImagingResampleInner, src/libImaging/Resample.c;
    13.0). The passes round to 8 bits between them, so the order changes the pixels, by up to ~24 grey levels on
    noise or line art."""
    (w, h), (nw, nh) = source, target
    return h - nh > 0 and h - nh > 2 * (w - nw)


def needed_span(start: float, end: float, step: float, length: int) -> tuple[int, int]:
    """The source lines (rows or columns) a bicubic resize of [start, end) along them (`step` source lines per output
    line) reads, with a line to spare each side; the image's own edges where they are nearer (PIL weighs the kernel
    within them)."""
    support = BICUBIC_SUPPORT * max(step, 1.0)
    return max(0, math.floor(start - support) - 1), min(length, math.ceil(end + support) + 1)


def to_float_chw(img: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
    """RGB PIL image -> float32 [3, H, W] in [0, 1], written into `out` if given.

    Done in numpy, not torch: torch's intra-op threads make this ~50x slower on a busy machine,
    and a batch is filled in place, then handed to torch once, without a copy.
    """
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    if out is None:
        out = np.empty(arr.shape, np.float32)
    np.multiply(arr, np.float32(1.0 / 255.0), out=out, dtype=np.float32)
    return out
