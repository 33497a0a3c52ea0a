"""The verb-level keys of `megadalle plan` (conf/plan.yaml).

`plan` also reads the `model`, `trainer` and `deepspeed` groups, exactly as `train` would get them:
the layout they describe (with `gpus` as the world size) is the one it predicts memory for.
"""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.config import check, join

DEVICES = ("gpu", "cpu")


@dataclass
class PlanConfig:
    gpus: int = 64
    """Ranks in total (GPUs, or CPU processes with device=cpu): the world size of the run planned."""
    gpus_per_node: int = 8
    """Ranks per node: collectives within a node run at nvlink_gbps, across nodes at ib_gbps."""
    gpu_mem_gb: float = 80.0
    """Memory of one GPU in GB (10^9 bytes, as vendors quote it)."""
    headroom: float = 0.1
    """Fraction of gpu_mem_gb kept free for what no formula counts (fragmentation, spikes); at least 0.1."""
    runtime_gb: float = 2.0
    """CUDA context, NCCL's own buffers and cuBLAS workspaces on every GPU (0 on device=cpu, where
    predictions are above the process's baseline after `import megadalle`)."""
    global_batch: int = 1024
    """Sequences per optimizer step for the suggested layout."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of one GPU in TFLOP/s (H100 SXM: 989); MFU is measured against it."""
    assumed_mfu: float = 0.4
    """Model FLOPs utilisation assumed when estimating compute time."""
    nvlink_gbps: float = 450.0
    """Per-GPU bandwidth of a collective inside a node, GB/s one way (H100 SXM NVLink 4: 900 both ways)."""
    ib_gbps: float = 50.0
    """Per-GPU bandwidth of a collective across nodes, GB/s one way (one 400 Gb/s NDR NIC per GPU)."""
    checkpoint_write_gbps: float = 5.0
    """Aggregate write bandwidth of the storage checkpoints go to, GB/s; sizes the USR1 lead time."""
    device: str = "gpu"
    """gpu: plan GPU memory; cpu: plan host memory per rank of a CPU/gloo run (the scale rehearsal's)."""

    def validate(self, where: str = "") -> None:
        for name in ("gpus", "gpus_per_node", "gpu_mem_gb", "global_batch", "peak_tflops", "nvlink_gbps", "ib_gbps",
                     "checkpoint_write_gbps"):
            check(getattr(self, name) > 0, join(where, name), getattr(self, name), "must be positive")
        check(0 < self.assumed_mfu <= 1, join(where, "assumed_mfu"), self.assumed_mfu, "must be in (0, 1]")
        check(0.1 <= self.headroom < 1, join(where, "headroom"), self.headroom, "must be in [0.1, 1)")
        check(self.runtime_gb >= 0, join(where, "runtime_gb"), self.runtime_gb, "must be non-negative")
        check(self.device in DEVICES, join(where, "device"), self.device, f"expected one of {DEVICES}")
