"""A training run's checkpoint as plain weights, streamed one tensor at a time.

The model is rebuilt from the run's own record (`run.json`: the task factory and the full config)
on the meta device, which costs no memory and gives the names and shapes to expect; the tensors
come lazily from whatever layout trained it:
- ZeRO 0-2: the module weights rank 0 saved (`mp_rank_00_model_states.pt`, memory-mapped, each
  tensor's pages handed back once consumed), which are the training weights; only an fp32 export
  of a run that trained in lower precision reads the fp32 master weights (DeepSpeed's `zero_to_fp32`);
- ZeRO-3: DeepSpeed's `zero_to_fp32` in `lazy_mode` (the rank files memory-mapped, each parameter
  gathered from its partitions when asked for);
- pipeline: each `layer_NN-model_states.pt` in turn, named through `layer_names` (see `pipeline_names`);
- `ema=True`: the EMA pieces every rank saved, consolidated parameter by parameter (ema.py).
So neither export nor `load_run` ever holds the checkpoint whole. Our own reads use
torch.load(weights_only=True). This lives under train/ (it reads train's checkpoints); the `export`
verb and the training verbs that export at their end (train-dvae, train-clip) both call it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import json
import mmap
import sys
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from megadalle.train.checkpoint import CheckpointError, damage, find_resumable
from megadalle.train.ema import EmaPieces
from megadalle.train.task import Task
from megadalle.weights import DTYPES, ShardedWriter, cast, save_weights

Tensors = Iterator[tuple[str, torch.Tensor]]
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def run_task(run_dir: str | Path) -> tuple[Task, dict]:
    """The task that trained `run_dir`, rebuilt from its run.json, and the run's config."""
    record_path = Path(run_dir) / "run.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no run.json)")
    record = json.loads(record_path.read_text())
    if not record.get("task_factory"):
        raise ValueError(f"{record_path} names no task_factory: the run cannot be rebuilt")
    module, function = record["task_factory"].split(":")
    return getattr(importlib.import_module(module), function)(record["config"]), record["config"]


def checkpoint_dir(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """The given checkpoint (verified complete) or the run's newest complete one."""
    if checkpoint:
        path = Path(checkpoint)
        why = damage(path)
        if why:
            raise CheckpointError(f"checkpoint={checkpoint}: {why}")
        return path
    root = Path(run_dir) / "checkpoints"
    tag = find_resumable(root)
    if tag is None:
        raise CheckpointError(f"{run_dir} has no complete checkpoint under {root}")
    return root / tag


def meta_model(task: Task) -> nn.Module:
    """The task's model with no storage: names and shapes only, filled later by assignment."""
    with torch.device("meta"):
        return task.build_model()


def pipeline_names(task: Task, model: nn.Module) -> list[dict[str, str]]:
    """For each pipeline layer i, {its state_dict key: the plain model's name}: key k of layer i is
    `layer_names[i] + "." + k` (`PipelineSpec.layer_names`, the plain sub-module path of each layer)."""
    return [{key: f"{prefix}.{key}" for key in _layer_keys(model, prefix)} for prefix in task.pipeline().layer_names]


def _layer_keys(model: nn.Module, prefix: str) -> list[str]:
    return list(model.get_submodule(prefix).state_dict().keys())


def _mapped(file: Path) -> dict:
    """torch.load of our checkpoints' files, memory-mapped (MAP_PRIVATE, read only: nothing is read yet)."""
    return torch.load(file, weights_only=True, map_location="cpu", mmap=True)


def _drop_pages(tensor: torch.Tensor) -> None:
    """Let the kernel take back the file pages of a memory-mapped tensor once it has been consumed.

    Read pages of a file mapping stay in the process's resident set until the whole mapping goes,
    so streaming a 24 GB file would end up "using" 24 GB. MADV_DONTNEED drops them; a private,
    unwritten file mapping re-reads them from the file if they are touched again, so it is safe for
    these tensors, and only for them (on anonymous memory it would zero the data). Linux only.
    """
    if _LIBC is None or tensor.numel() == 0:
        return
    start = tensor.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
    end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED


def _streamed(state: dict) -> Tensors:
    """Each (key, tensor) of a memory-mapped state dict, its pages dropped once the consumer moved on."""
    for key, value in state.items():
        yield key, value
        _drop_pages(value)


def _pipeline_tensors(task: Task, model: nn.Module, path: Path) -> Tensors:
    for i, names in enumerate(pipeline_names(task, model)):
        for key, value in _streamed(_mapped(path / f"layer_{i:02d}-model_states.pt")):
            if key not in names:
                raise CheckpointError(f"{path}: layer {i} holds {key}, which the model's layer {i} does not have")
            yield names[key], value


def _zero_tensors(path: Path, dtype: torch.dtype) -> Tensors:
    module_file = path / "mp_rank_00_model_states.pt"
    optim = any(path.glob("*_optim_states.pt"))
    module = None
    if module_file.is_file():
        module = _mapped(module_file).get("module")
    # ZeRO-3 saves no module weights; an fp32 export of a bf16 run needs the fp32 masters.
    need_masters = not module or (dtype == torch.float32 and any(t.dtype != torch.float32 for t in module.values()))
    if not (need_masters and optim):
        if not module:
            raise CheckpointError(f"{path} holds neither module weights nor ZeRO optimizer shards")
        yield from ((name.removeprefix("model."), t) for name, t in _streamed(module))
        return
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    lazy = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name, lazy_mode=True)
    for name in list(lazy):
        yield name.removeprefix("model."), lazy.pop(name).contiguous()


def checkpoint_tensors(task: Task, model: nn.Module, path: Path, ema: bool = False, dtype=torch.float32) -> Tensors:
    """(plain name, tensor) of the checkpoint at `path`, one at a time (see the module docstring)."""
    if ema:
        try:
            yield from EmaPieces(path)
        except (FileNotFoundError, ValueError) as err:
            raise CheckpointError(f"ema=true: {err}") from err
    elif any(path.glob("layer_*-model_states.pt")):
        yield from _pipeline_tensors(task, model, path)
    else:
        yield from _zero_tensors(path, dtype)


def checked(model: nn.Module, tensors: Tensors, path: Path) -> Tensors:
    """`tensors`, refused unless they are exactly the model's state, with its shapes."""
    expected = {name: t.shape for name, t in model.state_dict().items()}
    seen = set()
    for name, tensor in tensors:
        if name not in expected:
            raise CheckpointError(f"{path} holds {name}, which the run's model does not have")
        if tensor.shape != expected[name]:
            raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model {tuple(expected[name])}")
        seen.add(name)
        yield name, tensor
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} of the model's tensors, e.g. {missing[:3]}")


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, ema: bool = False) -> tuple[nn.Module, Task]:
    """The run's model (fp32, CPU, eval mode) with the newest complete checkpoint's weights (or its EMA)."""
    task, _ = run_task(run_dir)
    path = checkpoint_dir(run_dir, checkpoint)
    model = meta_model(task)
    state = {name: t.float().clone() for name, t in checked(model, checkpoint_tensors(task, model, path, ema), path)}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), task


def export(run_dir: str | Path, output: str | Path, checkpoint: str | Path | None = None, ema: bool = False,
           dtype: str = "bf16", max_shard_bytes: int = 5 << 30) -> Path:
    """Write the run's weights in `dtype`: a folder of shards + index + config.json, or, when `output`
    ends in .safetensors, that one file with its config JSON beside (small models)."""
    task, _ = run_task(run_dir)
    path = checkpoint_dir(run_dir, checkpoint)
    spec, model, torch_dtype = task.export_spec(), meta_model(task), DTYPES[dtype]
    tensors = checked(model, checkpoint_tensors(task, model, path, ema, torch_dtype), path)
    output = Path(output)
    if output.suffix == ".safetensors":
        return save_weights(output, {name: cast(t, torch_dtype) for name, t in tensors}, spec.kind, spec.config)
    writer = ShardedWriter(output, torch_dtype, max_shard_bytes)
    try:
        for name, tensor in tensors:
            writer.add(name, tensor)
    except BaseException:
        writer.abort()
        raise
    return writer.close(spec.kind, spec.config)
