"""Turn shard samples into training batches: images for the dVAE/CLIP, tokens for the Transformer.

A batch maker runs inside the DataLoader worker. It gets the raw bytes of the named fields of one
rank's part of a step, with their stream positions. Decoding is its job, by the safe decoders of
`fields.py` (so an image can be decoded straight at a reduced JPEG scale). Any randomness (which
caption of several, BPE dropout) is seeded by (seed, position), so a batch is the same whichever
worker, rank count or resume point produced it.
"""
from __future__ import annotations

import io
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from megadalle.data.captions import caption_lines
from megadalle.data.fields import IMAGE_FIELDS, decode_field
from megadalle.data.images import draft_for, resize_center_crop, to_float_chw, to_rgb, upscaled


class BatchMaker(Protocol):
    fields: tuple[str, ...]
    """Shard fields to read (raw bytes); nothing else in a sample is touched."""
    required: tuple[str, ...]
    """Those of `fields` every sample must have (the reader names a sample that lacks one)."""

    def __call__(self, samples: list[dict[str, Any]], positions: np.ndarray, seed: int) -> dict[str, Any]: ...


def sample_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of one stream position: the same draws whoever builds the batch, whenever. The whole root seed
    (megadalle.seeds: never negative): its low 32 bits alone gave seeds s and s + 2**32 the same captions and BPE
    dropout, in other sample orders."""
    return np.random.default_rng([seed, int(position)])


def pick_caption(text: str, rng: np.random.Generator) -> str:
    """One caption of a `txt` field holding several, one per line (megadalle.data.captions)."""
    lines = caption_lines(text)
    return lines[int(rng.integers(len(lines)))] if lines else ""


def sample_image(sample: dict[str, Any], image_fields: tuple[str, ...] = IMAGE_FIELDS) -> bytes:
    """The raw image of a sample: whichever of `image_fields` it has. Shards from elsewhere mix formats
    (img2dataset keeps each image's own: some jpg, some png or webp), so no one field is in every sample."""
    for name in image_fields:
        if name in sample:
            return sample[name]
    raise KeyError(f"sample {sample.get('__key__')!r} has no image field (none of {list(image_fields)})")


class UnreadableSample(ValueError):
    """A sample whose image does not decode or whose caption is not UTF-8: a shard damaged after it was written or
    indexed (a bad copy, bit rot), or indexed without decoding (`megadalle index decode=false` checks only which
    fields are there; its caption was a UnicodeDecodeError traceback in `encode`). It names the sample's key and its
    `position` in the batch; a caller that knows the shard names both (`sample_name`), for PIL's own message names
    neither ("cannot identify image file <_io.BytesIO ...>"). The position finds the shard: a key is unique only
    within its shard, so two shards may both hold `002`."""

    def __init__(self, key: str, position: int, err: Exception, what: str = "image does not decode"):
        super().__init__(unreadable(what, err))
        self.key, self.position = key, position


def unreadable(what: str, err: Exception) -> str:
    """Why a sample's part cannot be read (`what`: "caption is not UTF-8", with the decoder's `err`), and the ways
    out."""
    return (f"its {what} ({type(err).__name__}: {err}); the shard changed since it was written or indexed (a bad copy "
            "or bit rot), or was indexed without decoding (decode=false): index its folder again with `megadalle "
            "index` (decoding, the default, skips such samples), copy it again from where it came, or rerun the "
            "`megadalle prepare` that wrote it")


def sample_name(shard: object, key: str) -> str:
    """`<shard>:<key>`, how the errors about one sample name it."""
    return f"{shard}:{key}"


class ImageBatches:
    """dict(image=FloatTensor[B, 3, S, S] in [0, 1], upscaled=BoolTensor[B], caption=list[str], txt=list[str],
    key=list[str]).

    `caption` is one line of the sample's captions (seeded choice, for CLIP); `txt` is the whole
    field (all lines, what `encode` copies into token shards); `key` the sample's shard key.
    `upscaled` marks the images whose short side was below S, enlarged to a blurry target: tars from elsewhere hold
    thumbnails (`prepare` and `megadalle index` skip them with min_side), so training counts them (metric
    images_upscaled) and so does `encode`.
    `image_fields`: the image fields to look for; each sample's image is the one it has (`sample_image`).
    `captions=False` reads the images alone (the dVAE's, which learns from pixels): its batches have no `caption`
    and `txt`, and its shards need none (image-only tars, indexed with `require=[]`).
    """

    def __init__(self, image_size: int, image_fields: tuple[str, ...] = IMAGE_FIELDS, captions: bool = True):
        self.image_size, self.image_fields, self.captions = image_size, tuple(image_fields), captions
        self.required = ("txt",) if captions else ()
        self.fields = (*self.image_fields, *self.required)

    def decode(self, data: bytes) -> tuple[Image.Image, bool]:
        """Decode (a JPEG at 1/2..1/8 scale when that still covers image_size), RGB, resize, crop; and whether the
        image was enlarged (its size read before the draft shrinks it)."""
        img = Image.open(io.BytesIO(data))
        enlarged = upscaled(img.size, self.image_size)
        draft_for(img, self.image_size)
        img.load()
        return resize_center_crop(to_rgb(img), self.image_size), enlarged

    def __call__(self, samples, positions, seed):
        images = np.empty((len(samples), 3, self.image_size, self.image_size), np.float32)
        enlarged = np.zeros(len(samples), bool)
        texts = []
        for i, sample in enumerate(samples):
            if self.captions:
                try:
                    texts.append(decode_field("txt", sample["txt"]))
                except UnicodeDecodeError as err:
                    raise UnreadableSample(sample["__key__"], i, err, "caption is not UTF-8") from err
            data = sample_image(sample, self.image_fields)
            try:
                img, enlarged[i] = self.decode(data)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise UnreadableSample(sample["__key__"], i, err) from err
            to_float_chw(img, out=images[i])
        batch = {"image": torch.from_numpy(images), "upscaled": torch.from_numpy(enlarged),
                 "key": [s["__key__"] for s in samples]}
        if self.captions:
            batch.update(caption=[pick_caption(text, sample_rng(seed, pos)) for text, pos in zip(texts, positions)],
                         txt=texts)
        return batch


class TokenBatches:
    """dict(text=LongTensor[B, text_len], text_cut=BoolTensor[B], image=LongTensor[B, H*W]) from `codes.npy` + `txt`.

    The caption is tokenized here, not at encode time, so BPE dropout draws fresh segmentations
    every epoch (the paper's 10%), reproducibly: the draw is seeded by (seed, position).
    `text_cut` marks the captions longer than text_len, whose tail the model never reads.
    """

    fields = required = ("codes.npy", "txt")

    def __init__(self, tokenizer, text_len: int, dropout: float = 0.0):
        self.tokenizer, self.text_len, self.dropout = tokenizer, text_len, dropout

    def __call__(self, samples, positions, seed):
        texts, cut, codes = [], [], []
        for sample, pos in zip(samples, positions):
            rng = sample_rng(seed, pos)
            caption = pick_caption(decode_field("txt", sample["txt"]), rng)
            ids, was_cut = self.tokenizer.encode_cut(caption, self.text_len, dropout=self.dropout,
                                                     seed=int(rng.integers(1 << 31)))
            texts.append(ids)
            cut.append(was_cut)
            grid = decode_field("codes.npy", sample["codes.npy"])
            if grid.ndim != 2 or (codes and grid.size != codes[0].size):
                raise ValueError(f"sample {sample['__key__']!r}: codes.npy has shape {grid.shape}; "
                                 f"expected one [H, W] grid size for every sample")
            codes.append(grid.reshape(-1).astype(np.int64))
        return {"text": torch.tensor(texts, dtype=torch.long), "text_cut": torch.tensor(cut, dtype=torch.bool),
                "image": torch.from_numpy(np.stack(codes))}
