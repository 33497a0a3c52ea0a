"""Exponential moving average of the weights (the paper's iterate averaging, decay 0.99 / 0.999), sharded.

A full fp32 copy on every rank costs 4 bytes per parameter per GPU (49 GB at 12B), so each rank
averages only the elements it owns: every parameter of its pipeline stage is flattened and cut into
`dp_world` equal pieces of ceil(numel / dp_world) elements, exactly as ZeRO-3 partitions it, and
data-parallel rank r keeps piece r (the last piece is shorter, possibly empty). Under ZeRO-3 the
piece is read from `param.ds_tensor`, the rank's own partition (no gather); under ZeRO 0-2 and
pipelines it is a slice of the full parameter. The memory and the checkpoint bytes per rank are
then 1/dp of the stage's parameters, in every mode.

The decay warms up as TensorFlow's ExponentialMovingAverage(num_updates=) does: the average taken after training
update t (0-based) has decay min(decay, (1 + t) / (10 + t)), 0.1 after the first. A fixed decay from the initial
weights kept decay^T of the random initialisation after T updates (0.999 over 1,000 updates: 37%), and validation,
media and export ran on those mostly random weights; warmed up, the average keeps ~1e-17 of the initialisation
after 300 updates and leans on the latest updates until the decay reaches its value (after ~9 / (1 - decay)
updates: 8,990 at 0.999), then is the plain EMA. The decay depends on the update index alone, which every rank and
a resumed run share: every layout and a resume average alike, and an EMA saved before the warm-up existed loads.

Each rank saves its pieces once, as safetensors whose metadata records where each piece starts, so
`EmaPieces` can re-slice them for another data-parallel size (resume) or consolidate them (export).
Validation and media run with these weights swapped into the model (ema_swap.py), since they are the ones
export ships.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "megadalle-ema-1"
FILES = "ema_rank*.safetensors"


def file_name(rank: int) -> str:
    return f"ema_rank{rank:05d}.safetensors"


def warmed_decay(decay: float, step: int) -> float:
    """The decay of the average taken after training update `step` (0-based): TF's num_updates warm-up."""
    return min(decay, (1 + step) / (10 + step))


def piece_range(numel: int, dp_rank: int, dp_world: int) -> tuple[int, int]:
    """(start, length) of the flattened elements data-parallel rank `dp_rank` owns (ZeRO-3's partition)."""
    size = math.ceil(numel / dp_world)
    start = min(size * dp_rank, numel)
    return start, min(size, numel - start)


@dataclass
class Piece:
    param: nn.Parameter
    shape: tuple[int, ...]
    start: int
    length: int

    def source(self) -> torch.Tensor:
        """This rank's elements of the parameter's current value (a view; no copy, no gather)."""
        local = getattr(self.param, "ds_tensor", None)
        if local is not None:  # ZeRO-3: the partition is padded to ceil(numel/dp); the padding is not ours
            return local.data.reshape(-1)[:self.length]
        return self.param.detach().reshape(-1)[self.start:self.start + self.length]


class EMA:
    """The fp32 average of this rank's pieces of `params` (name -> parameter, plain-model names)."""

    def __init__(self, params: Iterable[tuple[str, nn.Parameter]], decay: float, dp_rank: int = 0, dp_world: int = 1):
        self.decay, self.dp_rank, self.dp_world = decay, dp_rank, dp_world
        self.params = list(params)
        """Every averaged parameter, this rank's piece of it empty or not (a swap gathers them all: ema_swap.py)."""
        self.pieces: dict[str, Piece] = {}
        for name, param in self.params:
            shape = tuple(getattr(param, "ds_shape", param.shape))
            numel = math.prod(shape)
            start, length = piece_range(numel, dp_rank, dp_world)
            local = getattr(param, "ds_tensor", None)
            if local is not None and local.numel() != math.ceil(numel / dp_world):
                raise ValueError(f"EMA: ZeRO-3 partition of {name} has {local.numel()} elements, expected "
                                 f"ceil({numel}/{dp_world}); parameters partitioned over a group other than "
                                 "the data-parallel ranks are not supported")
            if length:
                self.pieces[name] = Piece(param, shape, start, length)
        self.names = {id(param): name for name, param in self.params}
        self.shadow = {name: piece.source().float().clone() for name, piece in self.pieces.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights of training update `step` (0-based), with the warmed-up decay."""
        weight = 1 - warmed_decay(self.decay, step)
        for name, piece in self.pieces.items():
            self.shadow[name].lerp_(piece.source().float(), weight)

    @torch.no_grad()
    def restart_where_edited(self, param: nn.Parameter, before: torch.Tensor, after: torch.Tensor) -> None:
        """`param` was rewritten between updates from `before` to `after` (full tensors; train/param_edit.py): where
        an element changed, its average restarts at the new value, as the average started at the initial weights;
        elsewhere it keeps its history. A revived dVAE code is a new code: averaged in at 1 - decay per update, the
        EMA (what train-dvae exports and encode reads) saw it only ~1 / (1 - decay) updates later."""
        name = self.names.get(id(param))
        piece = self.pieces.get(name)
        if piece is None:  # not averaged, or none of its elements on this rank
            return
        span = slice(piece.start, piece.start + piece.length)
        shadow = self.shadow[name]
        edited = (after != before).reshape(-1)[span].to(shadow.device)
        shadow.copy_(torch.where(edited, after.reshape(-1)[span].to(shadow), shadow))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.shadow.values())

    def save(self, path: Path) -> None:
        """Write this rank's pieces and where they sit in each parameter (see EmaPieces)."""
        layout = {name: {"shape": list(p.shape), "start": p.start} for name, p in self.pieces.items()}
        metadata = {"format": FORMAT, "dp_rank": str(self.dp_rank), "dp_world": str(self.dp_world),
                    "layout": json.dumps(layout)}
        save_file({k: v.contiguous() for k, v in self.shadow.items()}, str(path), metadata=metadata)

    def load(self, checkpoint: Path) -> None:
        """Fill this rank's pieces from the EMA files of `checkpoint`, saved under any data-parallel size."""
        pieces = EmaPieces(checkpoint)
        for name, piece in self.pieces.items():
            if name not in pieces.shapes:
                raise ValueError(f"{checkpoint}: the EMA files hold no {name}")
            if pieces.shapes[name] != piece.shape:
                raise ValueError(f"{checkpoint}: EMA of {name} has shape {pieces.shapes[name]}, "
                                 f"the model {piece.shape}")
            self.shadow[name].copy_(pieces.read(name, piece.start, piece.length))


class EmaPieces:
    """The EMA pieces every rank saved in one checkpoint directory, read lazily (safetensors headers first)."""

    def __init__(self, checkpoint: Path):
        files = sorted(Path(checkpoint).glob(FILES))
        if not files:
            raise FileNotFoundError(f"{checkpoint} holds no EMA files ({FILES}); was the run trained with trainer.ema?")
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.where: dict[str, list[tuple[int, int, Path]]] = {}  # name -> [(start, length, file)]
        for file in files:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{file} is not a sharded EMA file (format {meta.get('format')!r})")
                for name, entry in json.loads(meta["layout"]).items():
                    self.shapes[name] = tuple(entry["shape"])
                    length = f.get_slice(name).get_shape()[0]
                    self.where.setdefault(name, []).append((entry["start"], length, file))
        for pieces in self.where.values():
            pieces.sort(key=lambda p: p[0])
        self._check_complete()

    def _check_complete(self) -> None:
        """Every element of every parameter in exactly one piece: a gap means a rank's file is missing."""
        for name, pieces in self.where.items():
            end = 0
            for start, length, file in pieces:
                if start != end:
                    raise ValueError(f"EMA of {name}: elements from {min(start, end)} are in no file or in two "
                                     "(a rank's file missing, or files of two runs mixed)")
                end = start + length
            if end != math.prod(self.shapes[name]):
                raise ValueError(f"EMA of {name}: only {end} of {math.prod(self.shapes[name])} elements saved")

    def read(self, name: str, start: int, length: int) -> torch.Tensor:
        """Flattened elements [start, start + length) of `name`, from whichever files hold them."""
        parts = []
        for begin, size, file in self.where[name]:
            lo, hi = max(start, begin), min(start + length, begin + size)
            if lo < hi:
                with safe_open(str(file), "pt") as f:
                    parts.append(f.get_slice(name)[lo - begin:hi - begin])
        return torch.cat(parts) if parts else torch.empty(0)

    def full(self, name: str) -> torch.Tensor:
        """The whole EMA of parameter `name` (fp32, its shape)."""
        shape = self.shapes[name]
        return self.read(name, 0, math.prod(shape)).reshape(shape)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor), one parameter at a time (export never holds more than one of them)."""
        for name in self.shapes:
            yield name, self.full(name)
