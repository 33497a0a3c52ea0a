"""The verb-level keys of `megadalle plan` (conf/plan.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config import check, join


@dataclass
class PlanConfig:
    gpus: int = 64
    """GPUs available in total."""
    gpu_mem_gb: float = 80.0
    """Memory of one GPU in GB (10^9 bytes, as vendors quote it)."""
    global_batch: int = 1024
    """Sequences per optimizer step."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of one GPU in TFLOP/s (H100 SXM: 989); MFU is measured against it."""
    assumed_mfu: float = 0.4
    """Model FLOPs utilisation assumed when estimating step time."""

    def validate(self, where: str = "") -> None:
        for name in ("gpus", "gpu_mem_gb", "global_batch", "peak_tflops"):
            check(getattr(self, name) > 0, join(where, name), getattr(self, name), "must be positive")
        check(0 < self.assumed_mfu <= 1, join(where, "assumed_mfu"), self.assumed_mfu, "must be in (0, 1]")
