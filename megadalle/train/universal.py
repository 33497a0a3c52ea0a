"""Resume on another data-parallel size, through DeepSpeed's universal checkpoints.

ZeRO's optimizer shards are cut for the data-parallel size that saved them; DeepSpeed loads them only
on the same size. Its converter (`deepspeed.checkpoint.ds_to_universal`) rewrites them as one file per
parameter and state (fp32 weights, Adam moments), which any data-parallel size loads with the
`checkpoint.load_universal` config key. So when `resume` finds a checkpoint saved by another
data-parallel size, rank 0 converts it once, into `<step dir>/universal` (written beside under a
temporary name, then renamed, so a crash never leaves a half-converted folder that looks done), and
every rank builds its engine with `load_universal` and loads from there. The data loader is elastic
already (DataPart), provided the global batch stays the same; the EMA re-slices itself (ema.py).

The conversion is slow (about 44 MB/s: 221 GB at 12B take some 80 minutes), so the other ranks wait for it
outside any collective, whose timeout (deepspeed.timeout_minutes) would end them: they poll for the finished
folder (`wait_for`), or for `universal.failed`, where rank 0 writes why it could not convert, up to WAIT_HOURS.
Before converting, rank 0 clears what a killed conversion left (`clear_stale`).

What is supported is checked up front, with the fix in the message: ZeRO stages 1, 2 and 3 change
their data-parallel size; a pipeline or ZeRO-0 run resumes on the layout that saved it.

DeepSpeed 0.19.8's ZeRO-3 universal load (stage3.py, `load_hp_checkpoint_state_from_checkpoint_dir_stage3`)
restores the fp32 partitions and Adam's moments but leaves the optimizer wrong in two ways, which
`repair_zero3_optimizer` puts right after every such load:
- every parameter group's state receives the same `step` tensor, and torch's AdamW advances a group's
  step in place, so at each update the shared step moved once per group: the bias corrections ran
  ahead, the first update after the resume was 2e-6 off and the next 3e-3 off the uninterrupted run;
- every group receives the first group's hyperparameters (the no-decay group decayed).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from megadalle.config.train import DeepSpeedConfig
from megadalle.processes import owner_gone, owner_tag
from megadalle.train.checkpoint import MANIFEST, CheckpointError, one_line
from megadalle.train.durable import atomic_write
from megadalle.train.mapped import deepspeed_optimizer_globals, mapped
from megadalle.train.micro_batch_objective import CONTRAST, USAGE, micro_batch_objective

FOLDER = "universal"
FAILED = "universal.failed"
STOPPED = "universal.stopped"
"""Rank 0's note that a stop signal ended its conversion: the waiting ranks stop with it, as from no failure."""
WAIT_HOURS = 24.0
"""How long ranks other than 0 wait for its conversion: a day covers some 3.5 TB at the converter's 44 MB/s."""
ELASTIC_ZERO_STAGES = (1, 2, 3)
SUPPORTED = "a changed data-parallel size is supported for ZeRO stages 1, 2 and 3 without pipeline"


@dataclass(frozen=True)
class Layout:
    """How a run is laid out over its ranks; recorded in every checkpoint's manifest."""

    dp_world: int
    pipeline_stages: int
    zero_stage: int
    global_batch: int
    micro_batch: int | None = dataclasses.field(default=None, compare=False)
    """Recorded for `keep_objective` (None in checkpoints from before it was); not compared: at the same global
    batch another split needs no conversion."""

    @classmethod
    def saved(cls, path: Path) -> Layout | None:
        """The layout recorded in the checkpoint at `path` (None for checkpoints from before it was recorded)."""
        layout = json.loads((path / MANIFEST).read_text()).get("layout")
        return cls(**layout) if layout else None


def needs_conversion(saved: Layout | None, current: Layout, path: Path) -> bool:
    """True when the checkpoint must go through a universal checkpoint; raise when the change is unsupported."""
    if saved is None or saved == current:
        return False
    if saved.global_batch != current.global_batch:
        raise CheckpointError(
            f"cannot resume {path}: it trained with a global batch of {saved.global_batch} samples, this run has "
            f"{current.global_batch} (micro_batch * grad_accum * {current.dp_world} data-parallel ranks); "
            + keep_batch(saved.global_batch, current))
    if (saved.pipeline_stages, saved.zero_stage) != (current.pipeline_stages, current.zero_stage):
        raise CheckpointError(
            f"cannot resume {path}: it was saved with pipeline_stages={saved.pipeline_stages}, "
            f"zero_stage={saved.zero_stage}, this run has pipeline_stages={current.pipeline_stages}, "
            f"zero_stage={current.zero_stage}; resume with the same deepspeed config")
    if saved.pipeline_stages > 1:
        raise CheckpointError(
            f"cannot resume {path} on {current.dp_world} data-parallel ranks: it was saved by a pipeline with "
            f"{saved.dp_world}; a pipeline run resumes only on the same number of ranks "
            f"({saved.dp_world * saved.pipeline_stages}); {SUPPORTED}")
    if saved.zero_stage not in ELASTIC_ZERO_STAGES:
        raise CheckpointError(
            f"cannot resume {path} on {current.dp_world} data-parallel ranks: it was saved by ZeRO stage "
            f"{saved.zero_stage} on {saved.dp_world}; {SUPPORTED}; resume on {saved.dp_world} ranks")
    return True


def keep_objective(saved: Layout, current: Layout, path: Path, flat: dict) -> None:
    """Raise when resuming the checkpoint at `path` on `current` would change the objective of the run of flattened
    config `flat` where its micro_batch is part of it (`micro_batch_objective`), in any run directory: run.json's
    comparison covers only the run's own (rundir.check_config), and a new run directory resuming another run's
    checkpoint took another micro_batch in silence. A CLIP run of `clip.negatives=micro_batch` contrasts micro_batch
    x data-parallel ranks pairs in each loss (other pairs: its loss and val/loss move by the log of the ratio); a
    dVAE's usage term is each micro-batch's (the rank count may change). A checkpoint that records no micro_batch is
    taken to have had this run's."""
    objective = micro_batch_objective(flat)
    before_batch = saved.micro_batch or current.micro_batch
    if objective == USAGE and before_batch != current.micro_batch:
        raise CheckpointError(
            f"cannot resume {path} with trainer.micro_batch={current.micro_batch}: it trained with "
            f"{before_batch}, and its codebook-use term (dvae.objective.usage_weight) is each micro-batch's, another "
            f"objective at another micro_batch; resume with trainer.micro_batch={before_batch}")
    before, after = before_batch * saved.dp_world, current.micro_batch * current.dp_world
    if objective != CONTRAST or before == after:
        return
    raise CheckpointError(
        f"cannot resume {path} with trainer.micro_batch={current.micro_batch} on {current.dp_world} data-parallel "
        f"ranks: it trained with clip.negatives=micro_batch, each loss contrasting trainer.micro_batch x ranks = "
        f"{before_batch} x {saved.dp_world} = {before} pairs, {after} here (another objective: its loss and val/loss "
        f"shift by ln({before}/{after})); resume with trainer.micro_batch={before_batch} on {saved.dp_world} "
        f"data-parallel ranks, or train with clip.negatives=update from the start")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def keep_batch(global_batch: int, current: Layout) -> str:
    """How to train `global_batch` samples per update on `current`'s ranks: the micro_batch x grad_accum pairs
    when its data-parallel size divides the batch, else the nearest rank counts whose data-parallel size does
    (a lost node leaves e.g. 6 ranks for a batch of 8, and no per-rank batch keeps it)."""
    dp = current.dp_world
    if global_batch % dp == 0:
        per_rank = global_batch // dp
        pairs = ", ".join(f"{m} x {per_rank // m}" for m in divisors(per_rank))
        return (f"keep the global batch: trainer.micro_batch * trainer.grad_accum = {per_rank} "
                f"(micro_batch x grad_accum: {pairs})")
    near = sorted(sorted(divisors(global_batch), key=lambda d: (abs(d - dp), d))[:4])
    ranks = ", ".join(str(d * current.pipeline_stages) for d in near)
    return (f"the global batch of {global_batch} is not divisible by {dp} data-parallel ranks; resume on a rank count "
            f"whose data-parallel size divides it: {ranks} ranks")


def clear_stale(path: Path, owned: bool) -> None:
    """Remove the temporary folders of conversions of `path` killed before their rename, and the failure note
    of the last attempt. `owned`: `path` lies in the run directory this process has locked (rundir.RunLock),
    so no other process converts it and every temporary folder is stale; otherwise only those whose writer was
    a process of this host that has ended go (processes.owner_gone)."""
    prefix = f"{FOLDER}.tmp-"
    for tmp in path.glob(f"{prefix}*"):
        if owned or owner_gone(tmp.name[len(prefix):]):
            shutil.rmtree(tmp, ignore_errors=True)
    (path / FAILED).unlink(missing_ok=True)
    (path / STOPPED).unlink(missing_ok=True)


def convert(path: Path, stopped: Callable[[], bool] = lambda: False) -> Path | None:
    """The universal form of the checkpoint at `path`, converted once by DeepSpeed's own converter (rank 0 only).
    A failure is written to `<path>/universal.failed` too, for the ranks waiting in `wait_for`. None when the
    conversion failed because a stop signal came (`stopped()`: a preemption signals the whole Slurm step, the
    converter too): that is no failure of the checkpoint but a stop before the first update (exit 75, requeued),
    so `<path>/universal.stopped` tells the waiting ranks, and the next run converts it again."""
    target = path / FOLDER
    if target.is_dir():
        return target
    try:
        _convert(path, target)
    except Exception as err:
        if stopped():
            atomic_write(path / STOPPED, one_line(err))
            return None
        atomic_write(path / FAILED, str(err) if isinstance(err, CheckpointError) else one_line(err))
        raise
    return target


def _convert(path: Path, target: Path) -> None:
    tmp = path / f"{FOLDER}.tmp-{owner_tag()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[checkpoint] converting {path} to a universal checkpoint (data-parallel size changed)", flush=True)
    # The converter is a script (argparse, worker pools); run it as one, in its own process.
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(path),
               "--output_folder", str(tmp), "--inject_missing_state", "--num_extract_workers", "1",
               "--num_merge_workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"DeepSpeed's ds_to_universal failed on {path}:\n"
                              f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    os.replace(tmp, target)
    atomic_write(path / "latest_universal", FOLDER)  # the converter's pointer named the temporary folder


def wait_for(path: Path, hours: float = WAIT_HOURS, poll_seconds: float = 5.0) -> Path | None:
    """The universal form of `path` once rank 0 has converted it (ranks other than 0). The finished folder
    appears whole (a rename), so its existence is the marker; `universal.failed` carries rank 0's error. None
    when a stop signal ended rank 0's conversion (`universal.stopped`): the run stops before its first update."""
    target, failed = path / FOLDER, path / FAILED
    end = time.monotonic() + hours * 3600
    while not target.is_dir():
        if (path / STOPPED).is_file():
            return None
        if failed.is_file():
            raise CheckpointError(f"rank 0 could not convert {path} to a universal checkpoint: "
                                  f"{failed.read_text().splitlines()[0]} ({failed} and rank 0's log say more)")
        if time.monotonic() >= end:
            raise CheckpointError(f"rank 0 has not converted {path} to a universal checkpoint in {hours:g} h: no "
                                  f"{target} nor {failed}; did rank 0 die? (its log says)")
        time.sleep(poll_seconds)
    return target


def loading_config(ds: DeepSpeedConfig) -> DeepSpeedConfig:
    """`ds` with DeepSpeed's `checkpoint.load_universal` on (the engine must be built with it)."""
    checkpoint = {**ds.extra.get("checkpoint", {"tag_validation": "FAIL"}), "load_universal": True}
    return dataclasses.replace(ds, extra={**ds.extra, "checkpoint": checkpoint})


def repair_zero3_optimizer(optimizer, universal: Path) -> None:
    """Undo what DeepSpeed's ZeRO-3 universal load gets wrong (see the module docstring): give each
    group's state its own step and each group its own saved hyperparameters. `optimizer` is the ZeRO-3
    optimizer (engine.optimizer); its `.optimizer` is the torch optimizer over the fp32 partitions."""
    from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT

    inner = optimizer.optimizer
    for state in inner.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()
    saved = mapped(universal / "zero" / "optimizer_state.pt", deepspeed_optimizer_globals())[OPTIMIZER_STATE_DICT]
    groups = saved["param_groups"]
    if len(groups) != len(inner.param_groups):
        raise CheckpointError(f"cannot resume from {universal}: it holds {len(groups)} optimizer parameter groups, "
                              f"this model has {len(inner.param_groups)}")
    for group, saved_group in zip(inner.param_groups, groups):
        group.update({key: value for key, value in saved_group.items() if key != "params"})
