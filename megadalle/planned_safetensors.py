"""A safetensors file laid out before its tensors exist, then filled one tensor at a time, in any order.

`safetensors.save_file` needs every tensor in memory and then serialises them to bytes once more, so
writing a shard costs about twice the shard (benchmarks/RESULTS.md, Export memory). An export knows
each tensor's name, shape and dtype before reading any of them (the model built on the meta device),
so the header and every offset can be written first; each tensor is then written at its offset
straight from its own memory as the checkpoint yields it, and nothing is held but that tensor (or that
piece of it: a tensor may come as row ranges).

The file is the format safetensors readers expect: an 8-byte little-endian header length, the JSON
header (padded with spaces to 8 bytes), then the data, every byte of it indexed. Tensors are laid
out by element size, largest first, so each one's offset is a multiple of its element size.
"""
from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import torch

Layout = dict[str, tuple[torch.Size, torch.dtype]]
_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def nbytes(shape: torch.Size, dtype: torch.dtype) -> int:
    return shape.numel() * dtype.itemsize


class PlannedFile:
    """One safetensors file: the header is written at construction, `write` fills each tensor, `close`
    refuses a file with a tensor never written."""

    def __init__(self, path: str | Path, layout: Layout, metadata: dict[str, str] | None = None):
        unknown = {str(dtype) for _, dtype in layout.values() if dtype not in _NAMES}
        if unknown:
            raise ValueError(f"{path}: safetensors cannot hold dtypes {sorted(unknown)}")
        self.path, self.layout = Path(path), layout
        header: dict = {"__metadata__": metadata} if metadata else {}
        self.offsets: dict[str, int] = {}
        end = 0
        for name in sorted(layout, key=lambda n: -layout[n][1].itemsize):
            shape, dtype = layout[name]
            size = nbytes(shape, dtype)
            header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [end, end + size]}
            self.offsets[name] = end
            end += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.data_start = 8 + len(text)
        self.file = open(self.path, "wb")
        self.file.write(struct.pack("<Q", len(text)) + text)
        self.file.truncate(self.data_start + end)
        self.missing = set(layout)
        self.unwritten = {name: shape.numel() for name, (shape, _) in layout.items()}
        """Elements of each tensor not yet written (a tensor may come in row ranges)."""

    def write(self, name: str, tensor: torch.Tensor, first_row: int = 0) -> None:
        """Write `tensor` as the planned tensor `name`, or, with `first_row`, as its rows from there on (a
        table trained in row pieces is written a piece at a time into its whole tensor)."""
        shape, dtype = self.layout[name]
        whole = first_row == 0 and tensor.shape == shape
        fits = len(shape) > 0 and tensor.shape[1:] == shape[1:] and 0 <= first_row <= shape[0] - tensor.shape[0]
        if tensor.dtype != dtype or not (whole or fits):
            where = f" at row {first_row}" if first_row else ""
            raise ValueError(f"{self.path}: {name}{where} is {tuple(tensor.shape)} {tensor.dtype}, "
                             f"planned {tuple(shape)} {dtype}")
        row_bytes = nbytes(shape[1:], dtype) if len(shape) else 0
        self.file.seek(self.data_start + self.offsets[name] + first_row * row_bytes)
        self.file.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self.unwritten[name] -= tensor.numel()
        self.missing.discard(name)

    def release(self) -> None:
        """Close a file being discarded (an aborted export removes it). Closing flushes, which fails again on the
        full disk that is often why it is discarded: that second error would hide the first and keep the
        temporary, so it is ignored (the descriptor is closed all the same)."""
        with contextlib.suppress(OSError):
            self.file.close()

    def close(self) -> None:
        self.file.close()
        missing = sorted(self.missing | {name for name, left in self.unwritten.items() if left})
        if missing:
            raise ValueError(f"{self.path}: {len(missing)} tensors were never written whole, e.g. {missing[:3]}")
