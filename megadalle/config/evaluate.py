"""`megadalle evaluate`'s verb-level keys (conf/evaluate.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from megadalle.config import check, check_seed
from megadalle.config.sample import GenerateConfig, check_sampling


@dataclass
class EvaluateConfig:
    weights: str = MISSING
    """The Transformer: a model folder (`export output=FOLDER`: dVAE, CLIP and tokenizer are read from it too),
    exported weights (.safetensors + .json, or shards + index) or a training run directory."""
    captions: str | None = None
    """A text file of captions, one per line (give this or `shards`)."""
    shards: str | None = None
    """Image shards (from `prepare`): the first caption line of each sample is a caption, its image a real image."""
    real: str | None = None
    """Image shards whose images FID/KID compare against; null = `shards` (with `captions`, give it or fid=false)."""
    max_captions: int = 64
    """At most this many captions are sampled: the first ones the tokenizer reads something of (a captions file's
    skipped lines do not count)."""
    max_real: int = 10_000
    """At most this many real images (the first ones); FID and KID need 2 or more."""
    n: int = 8
    """Samples per caption."""
    batch_size: int = 32
    """Samples drawn, decoded and scored together, as `generate`'s (each batch seeded from `seed` and its index:
    another batch_size draws other samples). Each caption is sampled on its own, so a batch holds at most `n`: with
    n=8, batch_size above 8 changes nothing."""
    temperature: float = GenerateConfig.temperature
    """Divides the logits before sampling, as `generate`'s: 1.0 samples the model's distribution, lower sharpens it."""
    top_k: int = GenerateConfig.top_k
    """Keep the k most likely image tokens at each step, as `generate`'s; 0 keeps all."""
    top_p: float = GenerateConfig.top_p
    """Keep the smallest set of image tokens with this much probability, as `generate`'s; 1.0 keeps all."""
    dvae_weights: str | None = None
    """null = as `generate`'s: a model folder's own, a run directory's recorded one, else dvae.safetensors beside
    `weights`."""
    clip_model: str = GenerateConfig.clip_model
    """The CLIP that scores the samples, as `generate`'s: megadalle (its CLIP, from `clip_weights`) or
    open_clip:<arch> (weights from the local file `clip_weights`; never downloaded). A model folder's own wins
    over the default."""
    clip_weights: str | None = None
    """The CLIP's weights; null = as `generate`'s: a model folder's own, a run directory's recorded one, else
    clip.safetensors beside `weights`."""
    tokenizer: str | None = None
    """null = as `generate`'s: a model folder's own, a run directory's recorded one, else tokenizer.model beside
    `weights`."""
    clip_score: bool = True
    """Score every sample with CLIP (mean cosine similarity with its caption). false with fid=false is refused
    unless save_samples=true: nothing would be measured or written."""
    fid: bool = True
    """FID and KID against the real images (needs `real` or `shards`: with `captions` alone, set fid=false)."""
    feature_extractor: str = "inception"
    """Registered extractor name (megadalle.fidelity); `inception` is torch-fidelity's InceptionV3."""
    feature_weights: str | None = None
    """Local weights file of the extractor (the Inception one for `inception`); never downloaded."""
    kid_subsets: int = 100
    """KID is averaged over this many random subsets of the sample and real features (torch-fidelity's 100)."""
    kid_subset_size: int = 1000
    """Features in each KID subset (torch-fidelity's 1000), at least 2; capped at the fewer of samples and real
    images, so small runs still get a KID."""
    save_samples: bool = False
    """Also write every sample as `<output>/samples/<caption>_<rank>.png` (the image itself, no frame) with
    `samples/index.json` (caption -> files, and their `order`), for judges outside megadalle. With clip_score the
    files go by CLIP score, best first (`_000` is the best sample, not the first drawn); without, in sample order. Every run first removes the samples
    an earlier run's index.json lists, so the folder holds this run's alone beside any file of the user's."""
    ema: str = "auto"
    """Which weights of a run directory, as generate's: auto = its EMA when it trained one (trainer.ema), else its
    live weights; true = the EMA (refused for a run without one); false = the live weights."""
    output: str = "evaluate"
    """Directory for metrics.json and metrics.md. In a `-m` sweep, the sweep's folder: job i writes to
    `<output>/<i>` (with no output given, to its job folder `<out_dir>/multirun/evaluate/<i>`)."""
    overwrite: bool = False
    """Replace the results of an earlier evaluate of other settings in `output` (metrics.json, metrics.md and the
    samples its samples/index.json lists; other files stay). false refuses such a folder before any model is read.
    Results of the same settings are done either way: the run says so and scores nothing again (a stopped sweep's
    same command skips its finished jobs)."""
    device: str = "auto"
    """auto = cuda when available, else cpu; or cpu, cuda, cuda:N."""
    dtype: str = "auto"
    """The Transformer's while sampling: auto = bf16 on a CUDA GPU that has it, else fp32; fp32 or bf16 to choose."""
    seed: int = 0
    """Seeds the sampling (caption i draws with seed + i, as `generate` with that seed) and the KID subsets."""

    def validate(self, where: str = "") -> None:
        check_seed(where, self.seed)
        check((self.captions is None) != (self.shards is None), "captions", self.captions,
              "give exactly one of captions=FILE and shards=DIR")
        check(self.clip_score or self.fid or self.save_samples, "clip_score", self.clip_score,
              "with fid=false and save_samples=false evaluate would sample every caption and measure and write "
              "nothing (metrics of n/a): set clip_score=true, fid=true (with real images) or save_samples=true")
        check(not self.fid or bool(self.real or self.shards), "fid", self.fid,
              "FID and KID compare the samples with real images, and captions=FILE brings none: give "
              "real=IMAGE_SHARDS, or fid=false")
        for name in ("captions", "shards", "real"):
            value = getattr(self, name)
            check(value is None or Path(value).exists(), name, value, "does not exist")
        for name in ("max_captions", "max_real", "n", "batch_size", "kid_subsets"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        check(self.kid_subset_size >= 2, "kid_subset_size", self.kid_subset_size,
              "KID's subsets need at least 2 samples each")
        check(self.real_images is None or self.max_real >= 2, "max_real", self.max_real,
              "FID and KID need at least 2 real images (or fid=false)")
        check_sampling(self)

    @property
    def real_images(self) -> str | None:
        """The image shards FID and KID compare against; None when there are none to compute."""
        return (self.real or self.shards) if self.fid else None
