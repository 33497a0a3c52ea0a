"""`megadalle export run=DIR output=FILE`: a training run's checkpoint as one safetensors file + config JSON.

A run directory holds DeepSpeed checkpoints in whatever layout trained it; users (and `generate`)
want plain weights. The model is rebuilt from the run's own record (`run.json`: the task factory
and the full config), then filled from the checkpoint:
- ZeRO 0-3: DeepSpeed's `zero_to_fp32` gathers the fp32 master weights from every rank's shard
  (names of the LossModule wrapper, `model.` stripped); stage 0 has none, its module state is read;
- pipeline: each `layer_NN-model_states.pt` is loaded into the plain model's sub-module that the
  task's PipelineSpec names for layer NN (`layer_names`), so the plain model ends up complete;
- `ema=true`: the EMA weights every rank saved (merged: stages hold disjoint parameters).
Our own reads use torch.load(weights_only=True); the result is written by megadalle.weights.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file
from torch import nn

from megadalle.train.checkpoint import CheckpointError, damage, find_resumable
from megadalle.train.task import Task
from megadalle.weights import save_weights


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


def checkpoint_dir(run_dir: str | Path, checkpoint: str | None = None) -> Path:
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


def _strip(state: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def fill_model(task: Task, model: nn.Module, path: Path, pipeline_stages: int, ema: bool) -> None:
    """Load the checkpoint at `path` into the plain `model` (see the module docstring)."""
    if pipeline_stages > 1:
        for i, name in enumerate(task.pipeline().layer_names):
            model.get_submodule(name).load_state_dict(torch.load(path / f"layer_{i:02d}-model_states.pt",
                                                                 weights_only=True, map_location="cpu"))
    elif any(path.glob("zero_pp_rank_*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
        model.load_state_dict(_strip(state), strict=True)
    else:
        state = torch.load(path / "mp_rank_00_model_states.pt", weights_only=True, map_location="cpu")["module"]
        model.load_state_dict(_strip(state), strict=True)
    if ema:
        files = sorted(path.glob("ema_rank*.safetensors"))
        if not files:
            raise CheckpointError(f"ema=true but {path} holds no EMA weights (trained with trainer.ema=null?)")
        shadow = {}
        for file in files:
            shadow.update(load_file(str(file)))
        params = dict(model.named_parameters())
        missing = set(params) - set(shadow)
        if missing:
            raise CheckpointError(f"{path}: EMA files lack {sorted(missing)[:5]}")
        with torch.no_grad():
            for name, value in shadow.items():
                params[name].copy_(value)


def load_run(run_dir: str | Path, checkpoint: str | None = None, ema: bool = False) -> tuple[nn.Module, Task]:
    """The run's model (fp32, CPU, eval mode) with the newest complete checkpoint's weights."""
    task, config = run_task(run_dir)
    model = task.build_model().float()
    stages = int(config.get("deepspeed", {}).get("pipeline_stages", 1))
    fill_model(task, model, checkpoint_dir(run_dir, checkpoint), stages, ema)
    return model.eval(), task


def export(run_dir: str | Path, output: str | Path, checkpoint: str | None = None, ema: bool = False) -> Path:
    """Write the run's weights to `output` (.safetensors) and the model config JSON beside it."""
    model, task = load_run(run_dir, checkpoint, ema)
    spec = task.export_spec()
    return save_weights(output, model.state_dict(), kind=spec.kind, config=spec.config)


def run(cfg: DictConfig) -> int:
    path = export(cfg.run, cfg.output, cfg.get("checkpoint"), bool(cfg.get("ema", False)))
    print(f"[export] wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    return 0
