"""Where the verbs that run trained models (generate, evaluate, encode) put them, and in which dtype.

`dtype=auto` runs the Transformer in bf16 on a CUDA GPU that has it and in fp32 elsewhere. On a GPU
bf16 halves what a 12B holds (24.6 GB of weights, not 49.2, and half the KV cache) and runs on the
tensor cores. On a CPU it depends on the CPU and the batch (benchmarks/RESULTS.md, Sampling, "bf16 on
the CPU"): on an Intel Xeon with AMX bf16 decoded 1.67x faster than fp32 at generate's batch of 32 but
15-31% slower at batch 1, and CPUs without native bf16 arithmetic emulate it. So the CPU keeps fp32,
the same speed everywhere and a seed's samples what they were; `dtype=bf16` is there to choose.
"""
from __future__ import annotations

import torch

from megadalle.config import ConfigError
from megadalle.config.sample import DTYPE_CHOICES
from megadalle.local_gpu import local_gpu, local_rank
from megadalle.weights import DTYPES as EXPORT_DTYPES

DTYPES = {name: dtype for name, dtype in EXPORT_DTYPES.items() if name in DTYPE_CHOICES}
"""The dtypes a model samples in, by the names the export uses for them."""


class DeviceError(ConfigError):
    """A device that this machine does not have; refused before any model is read onto it."""


def pick_device(name: str) -> torch.device:
    """auto = cuda when available, else cpu; anything else as torch names it (cpu:0 too), checked to exist here
    (torch's own failure comes later and elsewhere, e.g. as a pin_memory error while weights load). meta is
    refused: weights read onto it would be no weights."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"device={name!r}: {str(err).splitlines()[0]}") from None
    if device.type == "meta":
        raise DeviceError(f"device={name}: the meta device holds no values, so no weights can be read onto it; "
                          "use device=cpu, cuda or auto")
    if device.type not in ("cpu", "cuda"):  # mps, xpu, ...: torch's own check, where this torch has one
        backend = getattr(torch, device.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise DeviceError(f"device={name}: this machine has no {device.type} device that torch "
                              f"{torch.__version__} can use; use device=cpu, cuda or auto")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device={name}: this machine has no CUDA GPU that torch can use "
                              f"(torch {torch.__version__}); use device=cpu or device=auto")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


def pick_rank_device(name: str, world_size: int) -> torch.device:
    """`pick_device`, where one of `world_size` ranks (a split encode) that `auto` or `cuda` sends to a GPU takes its
    own (local_gpu.py); an index named (cuda:1) is obeyed."""
    device = pick_device(name)
    if world_size > 1 and device.type == "cuda" and device.index is None:
        return local_gpu(local_rank())
    return device


def pick_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype named (fp32, bf16), or for auto bf16 on a CUDA device that supports it and fp32 otherwise. A
    torch.dtype the models compute in (from Python, `load_pipeline(..., dtype=torch.bfloat16)`) is taken as it is;
    another floating one (float8) was taken, and failed inside the sampler."""
    if isinstance(name, torch.dtype) and name.is_floating_point:
        computed = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
        if name not in computed:
            raise ConfigError(f"dtype={name}: the models compute in {', '.join(map(str, computed))}")
        return name
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if not isinstance(name, str) or name not in DTYPES:
        raise ConfigError(f"dtype={name!r}: expected one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]
