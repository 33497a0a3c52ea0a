"""Data configs: `prepare` and `tokenizer` verb keys, and the `data` group the training verbs compose."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from megadalle.config import check, check_seed, join

IMAGE_FORMATS = ("jpg", "png")
SOURCES = ("shards", "synthetic")
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
VAL_DIR = "val"
"""Folder of the held-out validation split inside a shard directory (`prepare val_fraction=`, `encode`)."""


@dataclass
class PrepareConfig:
    """Verb-level keys of `megadalle prepare` (conf/prepare.yaml)."""

    input: str = MISSING
    """A folder of images (searched recursively, linked folders included; image + same-stem .txt caption), a
    folder of .tar shards (another prepare's output, img2dataset's, any webdataset tars; indexed in place on first
    use; its val/ split is read too and stays held out) or a .jsonl / .csv manifest. A folder holding both images
    and tars is refused."""
    output: str = MISSING
    """Shard directory; rewritten if it exists (index.json is removed first and written last). Its val/ is replaced
    by this run's split, so a val/ holding files megadalle did not write is refused, never deleted."""
    image_size: int = 256
    """Side of the square images written (resize the short side, then centre-crop)."""
    format: str = "jpg"
    """Re-encoding of the images: jpg (smaller) or png (lossless)."""
    quality: int = 95
    """JPEG quality (ignored for png)."""
    min_side: int = 64
    """Images whose short side is below this are skipped as too_small (upscaling them adds no detail); the summary
    counts the kept ones whose short side is below image_size (upscaled): min_side=image_size skips them too."""
    max_pixels: int = 89_478_485
    """Images with more pixels are skipped as decompression_bomb (PIL's default limit)."""
    max_aspect: float | None = None
    """Images whose long side is more than this many times the short side are skipped as extreme_aspect; null = no
    limit. Every image is centre-cropped to a square, so a 4000x300 panorama keeps its middle 7.5% under a caption
    for the whole scene; the summary counts the kept images that lost more than half their area."""
    shard_max_samples: int = 10_000
    """Samples per shard at most (with shard_max_bytes): shards are the unit of shuffling and of splitting
    the data over ranks and loader workers, so a few thousand samples each keeps many of them."""
    shard_max_bytes: int = 1_000_000_000
    """A new shard starts before one would exceed either limit."""
    num_workers: int | None = None
    """Decoding processes; null = one per CPU, 0 = in this process."""
    image_column: str = "image"
    """Manifest field (JSONL key or CSV column) holding the image path, relative to the manifest's folder."""
    caption_column: str = "caption"
    """Manifest field holding the caption (JSONL: a string or a list of strings). Rows naming one image (a row per
    caption, as COCO's) are one sample holding all their captions."""
    report: str | None = None
    """Where the JSON report of skipped inputs goes; null = <output>/report.json."""
    val_fraction: float = 0.0
    """Share of the samples held out as a validation split in <output>/val/, chosen by a hash of each sample's
    image bytes: reruns give the same split wherever the data sits and however it is named or sharded, copies of an
    image land on one side, and adding or removing data moves no other sample across; 0 = none. Shards with their own val/ keep it, and
    refuse a value above 0 (it would hold out a second share on top)."""

    def validate(self, where: str = "") -> None:
        for name in ("image_size", "min_side", "max_pixels", "shard_max_samples", "shard_max_bytes"):
            check(getattr(self, name) > 0, join(where, name), getattr(self, name), "must be positive")
        check(self.format in IMAGE_FORMATS, join(where, "format"), self.format, f"expected one of {IMAGE_FORMATS}")
        check(1 <= self.quality <= 100, join(where, "quality"), self.quality, "must be in [1, 100]")
        check_workers(where, self.num_workers)
        check(self.image_size ** 2 <= self.max_pixels, join(where, "image_size"), self.image_size,
              f"must be at most {math.isqrt(self.max_pixels)}: its square images would exceed max_pixels="
              f"{self.max_pixels}, which prepare refuses to read again (and PIL past twice its own limit)")
        check_apart(self.input, self.output, join(where, "output"), "prepare")
        check(self.max_aspect is None or self.max_aspect >= 1, join(where, "max_aspect"), self.max_aspect,
              "must be >= 1 (long side / short side) or null")
        check(0.0 <= self.val_fraction < 1.0, join(where, "val_fraction"), self.val_fraction, "must be in [0, 1)")


def check_apart(input: str, output: str, key: str, verb: str) -> None:
    """A verb that reads `input` and rewrites the folder `output` (`key`) needs the two apart, however spelled
    (`in/`, `./in`, absolute, a symlink): an output in the input writes shards among the files being read (and
    `<input>/val/` is the input's validation split); an input in the output is rewritten by the rerun that
    rebuilds it (stale shards deleted, `<output>/val/` replaced)."""
    src, dst = Path(input).resolve(), Path(output).resolve()
    both = f"(input={input!r}: {src}, output: {dst})"
    kind = "folder" if src.is_dir() else "manifest"
    check(dst != src, key, output, f"is the input {kind} {both}; choose another folder")
    check(src not in dst.parents, key, output, f"lies inside the input folder {both}; choose a folder outside it")
    check(dst not in src.parents, key, output,
          f"holds the input {both}, and {verb} rewrites its output; choose a folder that does not contain it")


@dataclass
class TokenizerConfig:
    """Verb-level keys of `megadalle tokenizer` (conf/tokenizer.yaml)."""

    input: str = MISSING
    """Shard directory whose `txt` captions (every line) are the training text."""
    output: str = MISSING
    """The sentencepiece model file to write (e.g. tokenizer.model)."""
    vocab_size: int = 16384
    """Upper bound on the vocabulary (the paper's 16384); a small corpus may give fewer pieces."""
    normalization: str = "nmt_nfkc_cf"
    """sentencepiece normalisation rule; the *_cf rules also case-fold."""
    character_coverage: float = 0.9995
    """Fraction of characters kept as pieces; the rarest others become unk. 0.98 to 1: sentencepiece takes no less."""
    max_sentences: int = 10_000_000
    """At most this many caption lines (a random sample) are used for training."""
    byte_fallback: bool = False
    """Spell unknown characters as UTF-8 bytes instead of unk (needs vocab_size > 260)."""
    seed: int = 0
    """Seed of the random sample of max_sentences caption lines: the same seed and captions give the same model."""
    overwrite: bool = False
    """Replace a tokenizer already at `output`. Refused by default: the runs trained with it record its sha256 and
    refuse another in its place, so export and generate of those runs would stop working."""

    def validate(self, where: str = "") -> None:
        check(self.vocab_size > 4, join(where, "vocab_size"), self.vocab_size, "must exceed the 4 special ids")
        check(self.normalization in NORMALIZATIONS, join(where, "normalization"), self.normalization,
              f"expected one of {NORMALIZATIONS}")
        check(0.98 <= self.character_coverage <= 1, join(where, "character_coverage"), self.character_coverage,
              "must be in [0.98, 1], the range sentencepiece accepts (1 keeps every character)")
        check(self.max_sentences > 100, join(where, "max_sentences"), self.max_sentences,
              "must exceed 100, the least sentencepiece samples (it failed with its own internal check)")
        check_seed(where, self.seed)


@dataclass
class IndexConfig:
    """Verb-level keys of `megadalle index` (conf/index.yaml): index tars written elsewhere (img2dataset...)."""

    dir: str = MISSING
    """Directory of `*.tar` shards without index.json; index.json, offset files and index-report.json go into it."""
    require: list[str] = field(default_factory=lambda: ["txt"])
    """Fields every sample must carry; a sample lacking one is skipped as missing_field."""
    require_media: bool = True
    """A sample must also carry an image (jpg, png, webp...) or codes.npy, else it is skipped as no_media."""
    decode: bool = True
    """Decode every field (images fully) to find corrupt samples; false checks only which fields are there
    (much faster, for sources one trusts: a corrupt image then fails later, in the loader)."""
    min_side: int = 0
    """Samples whose image's short side is below this are skipped as too_small (as `prepare`'s min_side): the
    loaders upscale smaller images to the model's input, a blurry target (they count them: metric images_upscaled).
    0 keeps every size. Loaders indexing the folder again on first use keep the value it was indexed with."""
    num_workers: int | None = None
    """Checking processes; null = one per CPU, 0 = in this process."""
    report: str | None = None
    """Where the JSON list of skipped samples goes; null = <dir>/index-report.json."""

    def validate(self, where: str = "") -> None:
        check_workers(where, self.num_workers)
        check(self.min_side >= 0, join(where, "min_side"), self.min_side, "must be >= 0 (0 keeps every size)")


WORKERS_PER_CORE = 4
"""The most data processes a core may have (`check_workers`)."""


def check_workers(where: str, workers: int | None) -> None:
    """prepare's and index's num_workers: null (one a core), 0 (in this process), or up to WORKERS_PER_CORE a core:
    num_workers=100000 started that many processes and hung at the first image."""
    cores = os.cpu_count() or 1
    check(workers is None or 0 <= workers <= WORKERS_PER_CORE * cores, join(where, "num_workers"), workers,
          f"must be null (one a core), 0 (this process) or at most {WORKERS_PER_CORE * cores} ({WORKERS_PER_CORE} a "
          f"core of this machine's {cores})")


@dataclass
class DataConfig:
    """The `data` group (conf/data/*.yaml): which shards a training verb reads and how."""

    source: str = "shards"
    """shards: read `shards`; synthetic: random caption and image tokens at the model's shapes, seeded by
    step (megadalle.data.synthetic; `megadalle train` only, no files or tokenizer needed)."""
    shards: str | None = MISSING
    """Shard directory with index.json (image shards for dVAE/CLIP, token shards for the Transformer)."""
    tokenizer: str | None = None
    """sentencepiece model; needed for token shards (`train`: captions are tokenized while loading; `train-clip` reads
    its own `tokenizer`, the dVAE none)."""
    image_size: int | None = None
    """Side of the images a loader yields; null = the model's input size for train-dvae and train-clip (dvae.image_size,
    clip.image_size), as stored (prepare's image_size) elsewhere."""
    bpe_dropout: float = 0.0
    """BPE dropout while tokenizing captions for training (`train`'s token shards; the paper's 0.1)."""
    shuffle: bool = True
    """Seeded permutation of all samples per epoch; false = shard order (e.g. for evaluation)."""
    shuffle_window: int | None = None
    """null = one permutation of all samples per epoch (best mixing, reads from every shard); N = shards
    in seeded order and samples permuted within runs of N (reads stay in a few shards: network file systems)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = load in the training process)."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""
    val_shards: str | None = None
    """Validation shard directory (same kind as `shards`, checked as they are when trainer.eval_every > 0: tars
    from elsewhere indexed on first use); null = `<shards>/val` when `prepare val_fraction=` (carried over by
    `encode`) wrote one, else no validation. Each validation reads at most one pass of it."""

    def validation_shards(self) -> str | None:
        """The validation shard directory in use: `val_shards`, else the held-out split beside `shards`; none for
        synthetic data, which reads no files (preflight refuses `val_shards` with it: a caller that skips preflight
        gets the run's note, `no_split`, where the first validation crashed after training)."""
        if self.source == "synthetic":
            return None
        if self.val_shards is not None:
            return self.val_shards
        held_out = Path(self.shards, VAL_DIR)
        return str(held_out) if (held_out / "index.json").is_file() else None

    def no_split(self) -> str:
        """The way out for a run that validates (trainer.eval_every) where `validation_shards` is None."""
        if self.source == "synthetic":
            return ("data=synthetic has no held-out split: its random tokens are new at every update; set "
                    "trainer.eval_every=0")
        held_out = Path(self.shards, VAL_DIR)
        if any(held_out.glob("*.tar")):  # tars written elsewhere: the run went on without them and did not say why
            return (f"{held_out} holds tars but no index.json, which prepare and encode write beside a split they "
                    f"hold out: set data.val_shards={held_out} to index and use them")
        return "set data.val_shards or run `prepare val_fraction=`"

    def validate(self, where: str = "data") -> None:
        check(self.source in SOURCES, join(where, "source"), self.source, f"expected one of {SOURCES}")
        check(self.source == "synthetic" or self.shards, join(where, "shards"), self.shards,
              "needs a shard directory (or data=synthetic)")
        check(self.image_size is None or self.image_size > 0, join(where, "image_size"), self.image_size,
              "must be positive or null")
        check(0.0 <= self.bpe_dropout < 1.0, join(where, "bpe_dropout"), self.bpe_dropout, "must be in [0, 1)")
        check(self.shuffle_window is None or self.shuffle_window > 0, join(where, "shuffle_window"),
              self.shuffle_window, "must be positive or null")
        check(self.num_workers >= 0, join(where, "num_workers"), self.num_workers, "must be >= 0")
        check(self.prefetch_factor >= 1, join(where, "prefetch_factor"), self.prefetch_factor, "must be >= 1")


SCHEMAS = {"data": DataConfig}
