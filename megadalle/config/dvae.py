"""The dVAE's configuration (conf/dvae/*.yaml): its architecture and its training objective.

The objective's schedules live beside the architecture because their lengths are tied to the
model size one trains (the paper's 5,000 and 150,000 updates make no sense for the tiny CPU
model); the optimizer itself (AdamW, lr, EMA) belongs to the trainer's config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from megadalle.config import check, check_seed, join
from megadalle.config.data import check_apart


RECONSTRUCTIONS = ("logit_laplace", "gaussian")


@dataclass
class DVAEObjective:
    """The ELB's terms and their schedules (paper, section 2.1 and appendix A.2)."""

    kl_weight: float = 6.6
    """β: final weight of the KL term to the uniform prior (the paper's 6.6 improves codebook use)."""
    kl_warmup_steps: int = 5000
    """Updates over which β rises from 0 on a cosine schedule."""
    tau_start: float = 1.0
    """Gumbel-softmax temperature at step 0."""
    tau_end: float = 0.0625
    """Temperature reached after `tau_anneal_steps` (the paper's 1/16)."""
    tau_anneal_steps: int = 150000
    """Updates over which τ falls on a cosine schedule (a linear one tended to diverge in the paper)."""
    reconstruction: str = "logit_laplace"
    """The pixels' likelihood: "logit_laplace" (the paper's, with a scale per pixel channel the decoder
    predicts) or "gaussian" (a fixed `sigma`; the decoder's scale channels go unused). On the demo's
    flat-colour shapes the tiny dVAE kept far more of its reconstructions with "gaussian"
    (benchmarks/RESULTS.md, Demo, "The dVAE's likelihood")."""
    sigma: float = 0.1
    """The Gaussian's standard deviation, in mapped pixel units (the pixels in [eps, 1 - eps])."""
    usage_weight: float = 0.0
    """Weight of the codebook-use term ln K - H(mean code distribution of the batch), scaled like the KL
    (megadalle.models.dvae_loss.usage_gap). 0 = the paper's objective; small dVAEs that leave codes dead
    (conf/dvae/tiny.yaml) switch it on. The batch is one micro-batch on one rank, not the update: the term is
    not linear in the batch (a few images cannot use every code), so it depends on `trainer.micro_batch`, and
    splitting the same global batch into more micro-batches (grad_accum, more ranks) never lowers it (entropy
    is concave) and changes its gradient (8 images' random logits: 0.074 nats as one micro-batch, 0.286 as four
    of 2); at a fixed micro_batch, grad_accum and ranks only average more such terms. Retune the weight when
    micro_batch changes. The logged `usage_gap` is the same mean of micro-batches' gaps (the codebook's
    `perplexity` is the update's)."""
    revive_every: int = 0
    """Every this many updates, the codes that were no grid cell's argmax during them (on any rank) are
    re-initialised as copies of live codes drawn by use, which then split those codes' cells
    (megadalle.train.dvae.CodeRevival; the codebook restarts of VQ-VAE training). 0 = never, the paper."""
    revive_until: int = 0
    """The last update at which codes may be revived, needed with revive_every (below revive_every it revives
    nothing, refused): a copy revived at the end of training would still be its donor's duplicate; leave it time to
    become a code of its own."""

    def validate(self, where: str) -> None:
        check(not self.revive_every or self.revive_until >= self.revive_every, f"{where}.revive_until",
              self.revive_until, f"is below {where}.revive_every={self.revive_every}: no update would revive a code; "
              f"set {where}.revive_until to the last update that may (before the end of training)")
        check(self.kl_weight >= 0, f"{where}.kl_weight", self.kl_weight, "must be non-negative")
        check(self.usage_weight >= 0, f"{where}.usage_weight", self.usage_weight, "must be non-negative")
        check(self.reconstruction in RECONSTRUCTIONS, f"{where}.reconstruction", self.reconstruction,
              f"must be one of {', '.join(RECONSTRUCTIONS)}")
        check(self.sigma > 0, f"{where}.sigma", self.sigma, "must be positive")
        for name in ("kl_warmup_steps", "tau_anneal_steps", "revive_every", "revive_until"):
            check(getattr(self, name) >= 0, f"{where}.{name}", getattr(self, name), "must be non-negative")
        for name in ("tau_start", "tau_end"):
            check(getattr(self, name) > 0, f"{where}.{name}", getattr(self, name), "must be positive")
        check(self.tau_end <= self.tau_start, f"{where}.tau_end", self.tau_end,
              f"must not exceed tau_start={self.tau_start}: the temperature is annealed (falls) towards the hard "
              "argmax codes the Transformer sees")


@dataclass
class DVAEConfig:
    image_size: int = 256
    """Side of the square RGB input in pixels."""
    n_hid: int = 256
    """Channels of the first group; group i (0-based) has n_hid * 2**i in the encoder."""
    n_blk_per_group: int = 2
    """Bottleneck residual blocks per group."""
    n_groups: int = 4
    """Groups of blocks; a 2x2 max-pool sits between consecutive groups, so the grid is image_size / 2**(n_groups-1)."""
    vocab_size: int = 8192
    """Codebook size: the encoder's logits per grid cell, the Transformer's image vocabulary."""
    n_init: int = 128
    """Channels of the decoder's first 1x1 conv, which acts as the code embedding."""
    decoder_min_width: int = 0
    """Floor on the width of each decoder group (otherwise n_hid * 2**(n_groups-1-g), narrowest at full
    resolution). 0 = the paper's layout. A small dVAE draws its last, full-resolution group with only n_hid
    channels; the tiny one keeps shapes better with a floor (conf/dvae/tiny.yaml)."""
    eps: float = 0.1
    """Pixels are mapped into (eps, 1 - eps) so the logit-Laplace's logit stays finite."""
    channels_last: bool = True
    """Run the convolutions in channels_last (NHWC) memory layout; the parameters stay contiguous either way
    (megadalle.models.dvae.Conv). A layout, not a different model: weights load into either setting. 1.35x per
    update of the demo's dVAE on 2 CPU cores; false runs them NCHW."""
    objective: DVAEObjective = field(default_factory=DVAEObjective)

    @property
    def downsample(self) -> int:
        return 2 ** (self.n_groups - 1)

    @property
    def grid_size(self) -> int:
        """Side of the code grid (32 for the paper's 256 px and 4 groups)."""
        return self.image_size // self.downsample

    def validate(self, where: str = "dvae") -> None:
        for name in ("image_size", "n_hid", "n_blk_per_group", "n_groups", "n_init"):
            check(getattr(self, name) > 0, f"{where}.{name}", getattr(self, name), "must be positive")
        check(self.n_groups <= self.image_size.bit_length(), f"{where}.n_groups", self.n_groups,
              f"must be at most {self.image_size.bit_length()} for {where}.image_size={self.image_size}: the code grid "
              "is image_size / 2**(n_groups-1)")
        check(self.vocab_size >= 2, f"{where}.vocab_size", self.vocab_size, "needs at least 2 codes")
        check(self.vocab_size <= 65536, f"{where}.vocab_size", self.vocab_size,
              "codes are stored as uint16, so at most 65536")
        check(self.image_size % self.downsample == 0, f"{where}.image_size", self.image_size,
              f"must be divisible by 2**(n_groups-1) = {self.downsample}")
        check(self.n_hid % 4 == 0, f"{where}.n_hid", self.n_hid, "must be divisible by 4 (bottleneck width n/4)")
        check(self.decoder_min_width >= 0 and self.decoder_min_width % 4 == 0, f"{where}.decoder_min_width",
              self.decoder_min_width, "must be 0 (off) or a positive multiple of 4 (bottleneck width n/4)")
        check(0.0 < self.eps < 0.5, f"{where}.eps", self.eps, "must be in (0, 0.5)")
        self.objective.validate(f"{where}.objective")


@dataclass
class TrainDVAEConfig:
    """Verb-level keys of `megadalle train-dvae` (conf/train-dvae.yaml); the groups are checked by their own schemas."""

    weights: str | None = None
    """Where the weights for users go (.safetensors + .json); null = <run_dir>/dvae.safetensors."""
    name: str | None = None
    """The run's name: its directory is <out_dir>/dvae/<name>; null = `default` (`slurm-<job id>` under Slurm)."""
    run_dir: str | None = None
    """The run's directory; null = <out_dir>/dvae/<name>, so rerunning the same command resumes it."""
    resume: str = "auto"
    """auto, never, or the path of a checkpoints/step_* directory (see megadalle.config.train.RunConfig)."""
    usage_window: int = 100
    """A code that no grid cell of any rank chose (argmax) in this many updates counts as dead (`dead_codes`)."""
    preview: int = 8
    """Images shown in the logged reconstruction grid: the last this many that rank 0 trained on, over as many
    micro-batches (and updates) as it takes."""
    seed: int = 0
    """Seed of the run's random draws (initialisation, data order, Gumbel noise): the same seed and data give the
    same run."""
    out_dir: str = "outputs"
    """The folder runs go under (<out_dir>/dvae/<name>)."""

    def validate(self, where: str = "") -> None:
        check(self.usage_window > 0, join(where, "usage_window"), self.usage_window, "must be positive")
        check_seed(where, self.seed)
        check(self.preview > 0, join(where, "preview"), self.preview, "must be positive")
        check(self.weights is None or str(self.weights).endswith(".safetensors"), join(where, "weights"), self.weights,
              "must end in .safetensors (the config JSON goes beside it)")


@dataclass
class EncodeConfig:
    """Verb-level keys of `megadalle encode` (conf/encode.yaml)."""

    dvae_weights: str = MISSING
    """Trained dVAE weights (.safetensors with its .json beside it, from train-dvae or export), or a train-dvae
    run directory: the file it exported (its run.json's `weights`, else its dvae.safetensors), refused when older
    than the run's newest checkpoint (megadalle.train.dvae_export). Not `dvae=`:
    hydra reads that as a choice in the `dvae` config group."""
    input: str = MISSING
    """Image shard directory (from `prepare`)."""
    output: str = MISSING
    """Token shard directory: one output shard per input shard, complete ones skipped on a rerun."""
    batch_size: int = 64
    """Images encoded per forward pass."""
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""

    def validate(self, where: str = "") -> None:
        check(self.batch_size > 0, join(where, "batch_size"), self.batch_size, "must be positive")
        check(self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
              join(where, "device"), self.device, "expected auto, cpu, cuda or cuda:N")
        check(str(self.dvae_weights).endswith(".safetensors") or Path(self.dvae_weights).is_dir(),
              join(where, "dvae_weights"), self.dvae_weights,
              "must be a .safetensors file, an exported weights folder or a train-dvae run directory "
              "(weights are never unpickled)")
        check_apart(self.input, self.output, join(where, "output"), "encode")


@dataclass
class ImportDVAEConfig:
    """Verb-level keys of `megadalle import-dvae` (conf/import-dvae.yaml)."""

    encoder: str = MISSING
    """OpenAI's encoder.pkl (the `dall-e` package's torch.save'd module); read by a restricted unpickler."""
    decoder: str = MISSING
    """OpenAI's decoder.pkl."""
    output: str = MISSING
    """The megadalle dVAE weights to write (.safetensors; the config JSON goes beside it)."""
    image_size: int = 256
    """Image side the dVAE is used at (the convolutions do not record it; OpenAI's is 256)."""

    def validate(self, where: str = "") -> None:
        check(str(self.output).endswith(".safetensors"), join(where, "output"), self.output,
              "must end in .safetensors (the config JSON goes beside it)")
        check(self.image_size > 0, join(where, "image_size"), self.image_size, "must be positive")


SCHEMAS = {"dvae": DVAEConfig}
