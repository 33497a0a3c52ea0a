"""The verb-level keys of `megadalle export` (conf/export.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config import check, join
from megadalle.config.ema import check_ema

DTYPES = ("auto", "bf16", "fp32", "fp16")


@dataclass
class ExportConfig:
    run: str = ""
    """The training run directory (holds run.json and checkpoints/)."""
    output: str = ""
    """A folder: the model folder (megadalle.sampling.files: Transformer shards, tokenizer, dVAE, CLIP), or only the
    Transformer's shards + model.safetensors.index.json + config.json with `weights_only`; or a path ending in
    .safetensors for one file with its .json beside it (written a tensor at a time, as shards are)."""
    checkpoint: str | None = None
    """A specific <run>/checkpoints/step_* directory; null = the newest complete one."""
    ema: str = "auto"
    """Which weights: auto = the EMA when the run trained one (trainer.ema: the weights its validation scored),
    else the live weights; true = the EMA (refused for a run without one); false = the live weights."""
    dtype: str = "auto"
    """Precision of the floating-point tensors written: bf16 (half the bytes of the fp32 masters), fp32, fp16; auto =
    bf16 for a Transformer run, fp32 for a dVAE or CLIP run (their outputs are computed again from the weights:
    encode's codes from a bf16 dVAE differ in about 1% of cells)."""
    max_shard_mb: int = 5000
    """Largest shard in MB (10^6 bytes); a tensor larger than this gets a shard of its own."""
    weights_only: bool = False
    """Write the Transformer's weights alone (no tokenizer, dVAE or CLIP beside them)."""
    tokenizer: str | None = None
    """Model folder: the sentencepiece model; None = the run's `data.tokenizer`."""
    dvae_weights: str | None = None
    """Model folder: the dVAE's .safetensors; None = the run's `dvae_weights` if it records one."""
    clip_weights: str | None = None
    """Model folder: the CLIP's .safetensors; None = the run's `clip_weights`, else no CLIP (no rerank)."""
    clip_model: str = "megadalle"
    """Model folder: `megadalle`, or `open_clip:<arch>` (clip_weights is then its local state dict, and must be
    given: what a run records is megadalle's CLIP)."""

    def validate(self, where: str = "") -> None:
        for name in ("run", "output"):
            check(bool(getattr(self, name)), join(where, name), getattr(self, name), "is required")
        check(self.dtype in DTYPES, join(where, "dtype"), self.dtype, f"expected one of {DTYPES}")
        check(self.max_shard_mb > 0, join(where, "max_shard_mb"), self.max_shard_mb, "must be positive")
        check_ema(self.ema, join(where, "ema"))
        self.check_clip(where)

    def dtype_for(self, kind: str) -> str:
        """The dtype written for a run of `kind` (its task's export kind): `dtype`, or what `auto` means for it."""
        if self.dtype != "auto":
            return self.dtype
        return "bf16" if kind == "transformer" else "fp32"

    def check_clip(self, where: str) -> None:
        """An open_clip reranker comes from the file `clip_weights` names: without it the folder used to go out
        with no CLIP at all (or with the run's recorded CLIP, megadalle's, read as an open_clip state dict)."""
        key = join(where, "clip_model")
        open_clip = self.clip_model.startswith("open_clip:")
        check(open_clip or self.clip_model == "megadalle", key, self.clip_model,
              "expected megadalle or open_clip:<arch>")
        check(not open_clip or bool(self.clip_weights), key, self.clip_model,
              "needs clip_weights=FILE, the architecture's local state dict (nothing is downloaded, and a run "
              "records only megadalle's CLIP); or clip_model=megadalle")
