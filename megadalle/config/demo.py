"""`megadalle demo`'s sizes (conf/demo/{full,fast}.yaml): data set, step counts and sampling of every stage."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from megadalle.config import check, check_seed
from megadalle.demo_data import MAX_HOLDOUT, all_scenes

CLIP_IMAGES = ("original", "reconstructed", "both")
DEMO_DVAE_PATHS = ("data.shards", "weights", "run_dir")


@dataclass
class DemoConfig:
    image_size: int = 32
    """Side of the generated images; the dVAE's (conf/dvae/tiny.yaml: 32 px -> 8x8 codes)."""
    per_scene: int = 60
    """Training images of each (colour, shape, position) scene, jittered in size and place."""
    holdout: int = 8
    """Whole scenes left out of training (at most 12, no two sharing two attributes): the held-out captions,
    the demo's headline. 8 of the 48 scenes: enough captions for a stable figure, 40 left to learn from."""
    vocab_size: int = 64
    """BPE vocabulary asked of the tokenizer (the captions use a few dozen words)."""
    text_len: int = 16
    """Caption tokens of the Transformer and CLIP. Every caption must fit (the demo checks before any stage runs,
    under its tokenizer): at 12, "yellow" took 4 of the 64-token BPE's pieces, and the position's last word was
    cut from every yellow caption, so left and right read the same."""
    dvae_groups: int = 3
    """The dVAE's block groups; the code grid is image_size / 2**(dvae_groups - 1) on a side."""
    dvae_steps: int = 1200
    """dVAE updates; its temperature anneal and KL warm-up (1/15) are fitted to them. 1200 updates of 8 images
    cost what 300 of 32 did and kept 64% of reconstructions against 26% (5 seeds against 2, a plain loop on the
    demo's images; benchmarks/RESULTS.md, Demo): at this size the dVAE learns per update, not per image."""
    dvae_batch: int = 8
    """Images per dVAE update."""
    dvae_lr: float = 1.0e-3
    """At 2e-3, 2 of 5 seeds' codebooks collapsed mid-run (every cell's posterior one code, KL = ln K) and one
    never recovered; at 1e-3 none of 5 did, and 82% of reconstructions were kept against 66% on average
    (benchmarks/RESULTS.md, Demo: "The dVAE's learning rate and dead-code revival")."""
    dvae_overrides: list[str] = field(default_factory=list)
    """train-dvae overrides applied after the demo's own (`dvae=tiny`, its size, schedules and trainer), to try
    a variant in the whole demo, e.g. "demo.dvae_overrides=['dvae.decoder_min_width=128']" (benchmarks/
    RESULTS.md, Demo: "A wider decoder"), or `seed=` for another initialisation. Where the stage reads and
    writes (data.shards, weights, run_dir) stays the demo's."""
    clip_steps: int = 1000
    """CLIP updates of 64 pairs (with clip_images=both, ~13 passes over its 4,800 pairs). Scoring the same
    samples of six seeds' demo models, CLIP ranked those the judge passes above the others with an AUC of
    0.69 held out at 500 or 1000 updates, against 0.64 for the old 200 on reconstructions alone (0.5: no
    better than chance). In whole demos over six seeds, 1000 held 67% of the held-out captions and beat all
    samples on every seed; 500 held 62% and lost on one (benchmarks/RESULTS.md, Demo: "Why CLIP's rerank
    did not help on the seen captions"). ~70-80 s on 2 cores (benchmarks/RESULTS.md: 68-89 s on an AMD EPYC, 68-71 s
    on an Intel Xeon)."""
    clip_batch: int = 64
    """Image-caption pairs per CLIP update: each pair's negatives are the batch's other captions."""
    clip_lr: float = 2.0e-3
    """CLIP's peak learning rate."""
    clip_images: str = "both"
    """What CLIP trains on: `original` (the training images), `reconstructed` (the dVAE's decode(encode(x))
    of them, the kind of image CLIP reranks) or `both`. Over six seeds at 1000 updates, CLIP's best 8 of 32
    held the seen captions 2 points above all 32 with both, 4 points below with reconstructions alone (below
    on all six seeds): trained only on reconstructions, CLIP takes the dVAE's artefacts (a triangle drawn as
    a stepped "hat") for the look of the caption. Trained on originals alone (four seeds), it ranked the
    samples worse: AUC 0.56 held out, 0.41 seen (demo_recon.reconstruct_folder; benchmarks/RESULTS.md, Demo)."""
    steps: int = 600
    """Transformer updates. On seed 0, 600 held 78% ± 8% of the held-out captions against 84% ± 8% for 900, in
    225 s against 354 s (benchmarks/RESULTS.md, Demo): inside the noise, and the demo within 10 minutes."""
    batch: int = 32
    """Transformer micro-batch."""
    lr: float = 1.0e-3
    """The Transformer's peak learning rate."""
    samples: int = 32
    """Samples drawn per caption; CLIP keeps the best `keep`."""
    keep: int = 8
    """Samples per caption that CLIP's rerank keeps and the judge scores."""
    seen: int = 6
    """Training captions evaluated beside the held-out ones (the headline is the held-out captions')."""
    temperature: float = 1.0
    """Sampling temperature of the image tokens (as `generate`'s)."""
    top_k: int = 0
    """Keep the k most likely image tokens at each step; 0 keeps all (as `generate`'s)."""
    top_p: float = 0.9
    """As `generate`'s default (megadalle/config/sample.py)."""
    check_per_scene: int = 4
    """Fresh images per scene (all 48) through the dVAE's encode -> decode for its check (demo_recon.py)."""
    threads: int = 0
    """torch threads of the training process; 0 keeps torch's default (one per core). On an idle 2-core AMD EPYC
    two threads trained the demo's dVAE and Transformer 1.5x faster than one (benchmarks/RESULTS.md, Demo); on a
    machine shared with other work, `demo.threads=1` avoids OpenMP threads waiting on each other (4x slower
    with 2 threads under a load average of ~20)."""

    @property
    def images(self) -> int:
        """Training images: `per_scene` of each scene not held out."""
        return self.per_scene * (len(all_scenes()) - self.holdout)

    @property
    def clip_pairs(self) -> int:
        """CLIP's training pairs: the images, or with clip_images=both, each twice (original and reconstruction)."""
        return self.images * (2 if self.clip_images == "both" else 1)

    def validate(self, where: str = "demo") -> None:
        for name in ("image_size", "per_scene", "vocab_size", "text_len", "dvae_steps", "dvae_batch", "clip_steps",
                     "clip_batch", "steps", "batch", "samples", "keep", "check_per_scene"):
            check(getattr(self, name) > 0, f"{where}.{name}", getattr(self, name), "must be positive")
        cores = os.cpu_count() or 1
        check(0 <= self.threads <= cores, f"{where}.threads", self.threads,
              f"must be in [0, {cores}], this machine's cores (0 keeps torch's default, one a core)")
        check(0 <= self.holdout <= MAX_HOLDOUT, f"{where}.holdout", self.holdout, f"must be in [0, {MAX_HOLDOUT}]")
        check(self.keep <= self.samples, f"{where}.keep", self.keep, f"must be at most samples={self.samples}")
        check(self.seen >= 0, f"{where}.seen", self.seen, "must be >= 0")
        check(self.holdout + self.seen > 0, f"{where}.seen", self.seen, "no captions to evaluate (holdout is 0 too)")
        for name in ("lr", "dvae_lr", "clip_lr"):
            check(getattr(self, name) > 0, f"{where}.{name}", getattr(self, name), "must be positive")
        check(self.top_k >= 0, f"{where}.top_k", self.top_k, "must be non-negative (0 = all tokens)")
        check(0 < self.top_p <= 1, f"{where}.top_p", self.top_p, "must be in (0, 1]")
        check(self.temperature > 0, f"{where}.temperature", self.temperature, "must be positive")
        check(self.clip_images in CLIP_IMAGES, f"{where}.clip_images", self.clip_images,
              f"expected one of {CLIP_IMAGES}")
        for i, item in enumerate(self.dvae_overrides):
            key = item.split("=", 1)[0]
            check("=" in item, f"{where}.dvae_overrides[{i}]", item, "must be a KEY=VALUE override")
            check(key not in DEMO_DVAE_PATHS, f"{where}.dvae_overrides[{i}]", item,
                  f"the demo sets {key} itself (its output folder)")
        check(1 <= self.dvae_groups <= self.image_size.bit_length(), f"{where}.dvae_groups", self.dvae_groups,
              f"must be in [1, {self.image_size.bit_length()}] for {where}.image_size={self.image_size}: the dVAE's "
              "grid is image_size / 2**(dvae_groups-1)")
        down = 2 ** (self.dvae_groups - 1)
        check_multiple(f"{where}.image_size", self.image_size, down,
                       f"the dVAE's downsampling 2**(dvae_groups-1) = {down}")
        pieces = tokenizer_minimum()
        check(self.vocab_size >= pieces, f"{where}.vocab_size", self.vocab_size, f"the captions need at least {pieces} "
              f"pieces (their distinct characters + 4 specials); set {where}.vocab_size={pieces} or more")
        self.fits_data(where)

    def fits_data(self, where: str) -> None:
        """Each stage's batch against its data, known from the sizes alone: the trainer refuses a batch larger than
        its data (order.check_global_batch), but only once the stages before it have trained, and naming
        trainer.micro_batch, a key the demo sets itself. CLIP contrasts each pair with the batch's others: one pair
        alone learns nothing (loss 0), which the demo, run without `train-clip`'s preflight, let through."""
        data = f"{self.images} training images ({where}.per_scene={self.per_scene} x " \
               f"{len(all_scenes()) - self.holdout} scenes not held out)"
        for name in ("dvae_batch", "batch"):
            check(getattr(self, name) <= self.images, f"{where}.{name}", getattr(self, name),
                  f"larger than the demo's {data}; set {where}.{name}={self.images} or less, or raise "
                  f"{where}.per_scene")
        both = f", each twice with {where}.clip_images=both" if self.clip_images == "both" else ""
        check(self.clip_batch <= self.clip_pairs, f"{where}.clip_batch", self.clip_batch,
              f"larger than CLIP's {self.clip_pairs} pairs, the demo's {data}{both}; set {where}.clip_batch="
              f"{self.clip_pairs} or less, or raise {where}.per_scene")
        check(self.clip_batch >= 2, f"{where}.clip_batch", self.clip_batch,
              "CLIP tells each image's caption from the batch's others: with one pair it learns nothing (loss 0); "
              f"set {where}.clip_batch=2 or more")


def check_multiple(key: str, value: int, step: int, why: str) -> None:
    """Refuse `key=value` unless a multiple of `step`, naming the nearest values that are."""
    below = value // step * step
    near = " or ".join(str(size) for size in (below, below + step) if size > 0)
    check(value % step == 0, key, value, f"must be a multiple of {step} ({why}): e.g. {key}={near}")


def tokenizer_minimum() -> int:
    """The smallest vocab_size the tokenizer trains on the demo's captions: sentencepiece needs a piece for each
    distinct character (the space included) and the 4 specials (data/tokenizer.py). Every character of any caption
    is in the training ones: no held-out set takes a word out of training (demo_data.split_scenes)."""
    return len(set("".join(scene.caption for scene in all_scenes()))) + 4


SCHEMAS = {"demo": DemoConfig}


@dataclass
class DemoRunConfig:
    """The demo's own keys beside its `demo` group, typed before any stage runs: `seed=abc` was a traceback at the
    first stage."""

    output: str = "outputs/demo"
    """Everything the stages write, and the grids of the held-out captions (conf/demo.yaml: `${out_dir}/demo`)."""
    seed: int = 0
    """The root seed: the data set, every stage's initialisation and data order derive from it."""

    def validate(self, where: str = "") -> None:
        check_seed(where, self.seed)
