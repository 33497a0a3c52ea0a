"""The fp32 master weights of a ZeRO checkpoint, one parameter at a time, never the files whole.

An fp32 export needs the optimizer's fp32 masters (the module weights are bf16, or under ZeRO-3
absent). DeepSpeed's `zero_to_fp32` memory-maps the rank files but keeps every page it reads, so a
ZeRO-3 export of the 12B's width peaked at 3.6x one bf16 copy of the weights (benchmarks/RESULTS.md,
scale rehearsal), and it cannot read the BF16_Optimizer files that bf16 ZeRO-1 writes. Here each
parameter is cut from the ranks' memory-mapped fp32 groups and their pages are handed back once it
is read (mapped.drop_pages), each piece cast on the way into the result: what stays resident is
the parameter being written, in the export's dtype.

The two layouts DeepSpeed 0.19.8 writes (`[bf16_]zero_pp_rank_<dp>_mp_rank_<stage>_optim_states.pt`):
- ZeRO-1/2 and BF16_Optimizer (pipelines too, stage by stage): each rank's
  `param_slice_mappings[group]` says where its fragment of each parameter lies in its
  `single_partition_of_fp32_groups[group]`; a parameter is its fragments in rank order (the ranks'
  partitions cut one flat group in that order).
- ZeRO-3: every rank holds ceil(numel / world) elements of every parameter, one after another in
  `param_shapes` order across its `fp32_flat_groups`; the last rank's tail is padding.
Shapes come from each stage's model-states file (`param_shapes`), buffers from its module.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator

import torch

from megadalle.train.checkpoint import CheckpointError
from megadalle.train.mapped import deepspeed_optimizer_globals, drop_pages, verified

Tensors = Iterator[tuple[str, torch.Tensor]]
_OPTIM_FILE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")


def has_masters(path: Path) -> bool:
    """Whether the checkpoint folder holds ZeRO optimizer shards (the fp32 masters)."""
    return bool(_optim_files(path))


def zero_masters(path: Path, dtype: torch.dtype = torch.float32) -> Tensors:
    """(DeepSpeed's parameter name, tensor) for every parameter and buffer, stage by stage: the fp32
    masters, cast to `dtype` piece by piece (a bf16 export never holds a parameter in fp32).

    Names are the engine's: `model.<plain name>` under ZeRO, `<layer index>.<key>` under a pipeline
    (each pipeline stage wrote its own shards, `mp_rank_<stage>`).
    """
    stages = _optim_files(path)
    if not stages:
        raise CheckpointError(f"{path} holds no ZeRO optimizer shards (*_optim_states.pt)")
    for stage, files in enumerate(stages):
        ranks = [_optimizer_state(f) for f in files]
        stage3 = "fp32_flat_groups" in ranks[0]
        module_file = path / (f"zero_pp_rank_0_mp_rank_{stage:02d}_model_states.pt" if stage3
                              else f"mp_rank_{stage:02d}_model_states.pt")
        if not module_file.is_file():
            raise CheckpointError(f"{path} lacks {module_file.name}, which names the parameters' shapes")
        states = verified(module_file)
        if states.get("frozen_param_shapes") or states.get("shared_params"):
            raise CheckpointError(f"{module_file} holds frozen or shared parameters, which megadalle's models do not have")
        buffers = set(states.get("buffer_names") or ())
        yield from ((name, t.to(dtype)) for name, t in (states.get("module") or {}).items() if name in buffers)
        yield from (_stage3 if stage3 else _stage12)(path, ranks, states["param_shapes"], dtype)


def _optim_files(path: Path) -> list[list[Path]]:
    """For each pipeline stage (one without a pipeline), its data-parallel ranks' optimizer files in
    rank order; refused if a rank or a stage is missing."""
    found: dict[int, dict[int, Path]] = {}
    for file in path.glob("*_optim_states.pt"):
        match = _OPTIM_FILE.match(file.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = file
    if sorted(found) != list(range(len(found))):
        raise CheckpointError(f"{path}: optimizer shards of pipeline stages {sorted(found)}; a stage is missing")
    for stage, ranks in found.items():
        if sorted(ranks) != list(range(len(ranks))) or len(ranks) != len(found[0]):
            raise CheckpointError(f"{path}: stage {stage} has optimizer shards of ranks {sorted(ranks)}; "
                                  f"stage 0 has {len(found[0])}: a rank's file is missing")
    return [[found[stage][rank] for rank in range(len(found[stage]))] for stage in range(len(found))]


def _optimizer_state(file: Path) -> dict:
    return verified(file, deepspeed_optimizer_globals())["optimizer_state_dict"]


def _stage12(path: Path, ranks: list[dict], groups: list[dict], dtype: torch.dtype) -> Tensors:
    for g, shapes in enumerate(groups):
        flats = [rank["single_partition_of_fp32_groups"][g] for rank in ranks]
        slices = [rank["param_slice_mappings"][g] for rank in ranks]
        for name, shape in shapes.items():
            pieces = [flat.narrow(0, s[name].start, s[name].numel) for flat, s in zip(flats, slices) if name in s]
            yield name, _joined(pieces, name, shape, path, True, dtype)


def _stage3(path: Path, ranks: list[dict], groups: list[dict], dtype: torch.dtype) -> Tensors:
    world = len(ranks)
    flats = [rank["fp32_flat_groups"] for rank in ranks]
    offset = 0
    for name, shape in ((name, shape) for shapes in groups for name, shape in shapes.items()):
        share = math.ceil(math.prod(shape) / world)
        pieces = [p for flat in flats for p in _window(flat, offset, share)]
        yield name, _joined(pieces, name, shape, path, False, dtype)
        offset += share
    held = sum(t.numel() for t in flats[0])
    if offset != held:
        raise CheckpointError(f"{path}: the parameters take {offset} elements per rank, the shards hold {held}")


def _window(flat_groups: list[torch.Tensor], offset: int, length: int) -> list[torch.Tensor]:
    """Elements [offset, offset + length) of the groups laid end to end, as views of the groups."""
    pieces = []
    for group in flat_groups:
        if length and offset < group.numel():
            take = min(length, group.numel() - offset)
            pieces.append(group.narrow(0, offset, take))
            length -= take
            offset = 0
        else:
            offset -= group.numel()
    if length:
        raise CheckpointError(f"the ZeRO-3 shards end {length} elements short of a parameter")
    return pieces


def _joined(pieces: list[torch.Tensor], name: str, shape, path: Path, exact: bool, dtype: torch.dtype) -> torch.Tensor:
    """One parameter from its pieces, in `dtype`: each piece is copied (and cast) into the result and
    its file pages dropped before the next is read, so the fp32 parameter is never held whole."""
    numel = math.prod(shape)
    have = sum(p.numel() for p in pieces)
    if have < numel or (exact and have != numel):
        raise CheckpointError(f"{path}: the shards hold {have} elements of {name}, whose shape {tuple(shape)} needs {numel}")
    out = torch.empty(have, dtype=dtype)
    at = 0
    for piece in pieces:
        out[at:at + piece.numel()].copy_(piece)
        drop_pages(piece)
        at += piece.numel()
    return out[:numel].view(shape)
