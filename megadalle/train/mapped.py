"""Checkpoint files read through memory maps, each tensor's pages handed back once it is consumed.

A memory-mapped torch.load reads nothing up front, but every page it reads stays in the process's
resident set until the whole mapping goes: streaming a 24 GB file tensor by tensor would still end up
"using" 24 GB. `drop_pages` gives the pages of a consumed tensor back, which is what lets export and
`load_run` stream checkpoints far larger than the machine's memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from pathlib import Path
from typing import Iterable, Iterator

import torch

from megadalle.train.zip_crc import check_crc

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
_MADV_DONTNEED = 4


def mapped(file: Path, safe_globals: Iterable[type] = ()) -> dict:
    """torch.load of a checkpoint file, memory-mapped (MAP_PRIVATE, read only: nothing is read yet).

    Always weights_only: a checkpoint is data, and only the classes named in `safe_globals` (what
    DeepSpeed's optimizer files pickle besides tensors) are admitted beside torch's own.
    """
    with torch.serialization.safe_globals(list(safe_globals)):
        return torch.load(file, weights_only=True, map_location="cpu", mmap=True)


def verified(file: Path, safe_globals: Iterable[type] = ()) -> dict:
    """`mapped`, once every zip record of `file` matched its CRC-32 (zip_crc.py): what export and `load_run`
    read, where damage inside a file would otherwise become wrong weights in silence."""
    check_crc(file)
    return mapped(file, safe_globals)


def deepspeed_optimizer_globals() -> tuple[type, ...]:
    """The classes DeepSpeed pickles into its optimizer files beside tensors, for `mapped`'s safe_globals."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address


def drop_pages(tensor: torch.Tensor) -> None:
    """Let the kernel take back the file pages under a memory-mapped tensor (Linux; elsewhere a no-op).

    MADV_DONTNEED on a private, unwritten file mapping re-reads the pages from the file if they are
    touched again, so it is safe for tensors from `mapped`, and only for them: on anonymous memory it
    would zero the data.
    """
    if _LIBC is None or tensor.numel() == 0:
        return
    start = tensor.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
    end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


def streamed(state: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """Each (key, tensor) of a mapped state dict, its pages dropped once the consumer moved on."""
    for key, value in state.items():
        yield key, value
        drop_pages(value)
