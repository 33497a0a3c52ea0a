"""Which samples of a tar written elsewhere indexing keeps: each field it has a safe decoder for is decoded.

Images are decoded fully, json, txt and npy fields too; pickles and unknown fields never are. A sample
whose image, caption or codes fail, that lacks a required field or holds only blank caption lines is
skipped with a reason, as `prepare` skips bad inputs; so is one whose image's short side is below `min_side` (a
thumbnail the loaders would upscale to a blurry target; 0, the default, keeps every size). Metadata that fails
(a string `.id`, a cut `.json`) is the input's business: a warning, and the sample is kept (`prepare` and
`encode`, which copy the json, leave it out).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Iterable

from megadalle.data.captions import caption_lines
from megadalle.data.fields import IMAGE_FIELDS, UnsafeFieldError, decode_field, extension
from megadalle.data.tar import TarSample

MEDIA_FIELDS = (*IMAGE_FIELDS, "codes.npy")
"""What a sample must carry one of, with `require_media`: something to train on."""
CAPTION_FIELDS = ("txt",)
"""The captions every reader takes: with the media, the fields that decide whether a sample is kept."""


def check_image(data: bytes) -> tuple[int, int]:
    """Decode an image completely (a JPEG at 1/8 scale: every coefficient is still read); its original size."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    size = img.size
    img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
    img.load()
    return size


@dataclass
class SampleCheck:
    """What indexing found in one sample."""

    reason: str = ""
    """Why the sample is skipped; "" when it is kept."""
    detail: str = ""
    size: tuple[int, int] | None = None
    """The size of the image the loaders take (`loaders_image`), when decoded."""
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(reason, detail) of each metadata field that does not decode (a string `.id`, a cut `.json`): counted,
    but the sample is kept, since only its image and caption decide whether it can be trained on."""


def check_sample(sample: TarSample, require: Iterable[str], require_media: bool, decode: bool = True,
                 min_side: int = 0) -> SampleCheck:
    """Decodes every field it safely can (with `decode=False` only the fields' presence is checked: fast, for
    sources one trusts, and with `min_side` the image's header); a deciding field (image, caption, codes, any of
    `require`) that fails skips the sample, another one is a warning, and so does an image whose short side is
    below `min_side`."""
    missing = [name for name in require if name not in sample.data]
    if missing:
        return SampleCheck("missing_field", f"no {missing[0]!r} field{dotted_key_hint(sample, [missing[0]])}")
    if require_media and not any(name in sample.data for name in MEDIA_FIELDS):
        hint = dotted_key_hint(sample, MEDIA_FIELDS)
        return SampleCheck("no_media", f"none of {list(MEDIA_FIELDS)} among {sample.names}{hint}")
    check, deciding, image = SampleCheck(), {*MEDIA_FIELDS, *CAPTION_FIELDS, *require}, loaders_image(sample)
    for name, raw in sample.data.items() if decode else ():
        ext = extension(name)
        try:
            if ext in IMAGE_FIELDS:
                size = check_image(raw)
                if name == image:
                    check.size = size
            else:
                decode_field(name, raw)
        except UnsafeFieldError:
            continue  # a pickle (never decoded) or a field nobody reads: not ours to judge
        except Exception as err:  # PIL, zlib, json and unicode errors alike
            problem = f"bad_{ext}", f"{name}: {type(err).__name__}: {err}"
            if name in deciding:
                return SampleCheck(*problem)
            check.warnings.append(problem)
    if "txt" in sample.data and not caption_lines(sample.data["txt"].decode("utf-8", errors="replace")):
        return SampleCheck("empty_caption", "the txt field holds no caption (blank lines only)")
    return too_small(sample, check, min_side) if min_side else check


def too_small(sample: TarSample, check: SampleCheck, min_side: int) -> SampleCheck:
    """`check`, or a too_small skip when the image the loaders take (`batches.sample_image`'s order) has a short side
    below `min_side`: its size as decoded, or read from its header when the fields were not decoded."""
    from PIL import Image

    name, size = loaders_image(sample), check.size
    if size is None and name is not None:
        try:
            size = Image.open(io.BytesIO(sample.data[name])).size
        except Exception as err:  # no decoder recognises the header
            return SampleCheck(f"bad_{extension(name)}", f"{name}: {type(err).__name__}: {err}")
    if size is not None and min(size) < min_side:
        return SampleCheck("too_small", f"{size[0]}x{size[1]}: short side < min_side={min_side}")
    return check


def loaders_image(sample: TarSample) -> str | None:
    """The image field the loaders take (`batches.sample_image`'s order: the first of IMAGE_FIELDS it has, not the
    first in the tar), so that a sample holding two images is judged by the one it is trained on; None without one."""
    return next((name for name in IMAGE_FIELDS if name in sample.data), None)


def dotted_key_hint(sample: TarSample, wanted: Iterable[str]) -> str:
    """Why a sample lacks a field it seems to hold: `photo.v1.jpg` is key `photo`, field `v1.jpg` (webdataset's
    rule: the key ends at the base name's first dot), so `photo.v1.*` and `photo.v2.*` are one sample without
    a `jpg`. "" when no field of the sample ends like a wanted one."""
    ends = {extension(name) for name in wanted}
    dotted = [name for name in sample.names if "." in name and extension(name) in ends]
    if not dotted:
        return ""
    return (f" (a dot in a file name's stem splits the key: `{sample.key}.{dotted[0]}` is key {sample.key!r}, "
            f"field {dotted[0]!r}; rename the files so that their stems hold no dot)")
