"""Which of its node's GPUs a rank uses: the one at its local rank, counted among the GPUs it sees.

A launcher that starts a node's ranks together (torchrun, `deepspeed --no_local_rank`: LOCAL_RANK; srun: SLURM_LOCALID)
lets each see all of the node's GPUs, so a plain `cuda` put every rank on cuda:0, the others idle. Where each rank sees
one GPU (srun --gpus-per-task, CUDA_VISIBLE_DEVICES per rank) the modulo gives that one. train's ranks
(train/distributed.py) and a split encode take theirs here.

The rank, the world size and the local rank come from one launcher, found once (`launched`): a rank that took its
rank and world size from srun and its local rank from torchrun's RANK (a RANK left in srun's environment) used
another GPU than its rank said.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import torch

LAUNCHERS = {"env": ("RANK", "WORLD_SIZE", "LOCAL_RANK"), "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")}
"""Each launcher's (rank, world size, local rank) variables, by the name train/distributed.py gives it, the first that
gives a rank and a world size taken: torchrun and DeepSpeed's launcher, then srun (torchrun started inside an srun
step numbers its own ranks)."""


STEP_TASKS = "SLURM_STEP_NUM_TASKS"
"""The tasks srun started in this step, which the slurm launcher's world size is where srun sets it: SLURM_NTASKS is the
allocation's, and a step of fewer tasks (`srun -n1 --preserve-env` in an allocation of 8) waited at the rendezvous
for ranks that never start."""
INTERACTIVE_STEP = "4294967290"
"""SLURM_STEP_ID of the shell `salloc` opens on a compute node (Slurm's interactive step, with
`LaunchParameters=use_interactive_step`): it carries the allocation's SLURM_NTASKS and no SLURM_STEP_NUM_TASKS, and a
verb run there is one process, as on a laptop: `train` waited 30 minutes for ranks that never start, and `encode`
wrote rank 0's share alone, every time it was rerun."""


class Launched(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def launcher(environ: Mapping[str, str] | None = None) -> str | None:
    """The name of the first of LAUNCHERS whose rank and world size are both set (as numbers), None without one."""
    env = os.environ if environ is None else environ
    for name, (rank, world, _) in LAUNCHERS.items():
        if name == "slurm" and env.get("SLURM_STEP_ID") == INTERACTIVE_STEP:
            continue
        if env.get(rank, "").isdigit() and env.get(world, "").isdigit():
            return name
    return None


def launched(environ: Mapping[str, str] | None = None) -> Launched:
    """The process's place in its job, from the `launcher` found (its local rank 0 where it gives none); rank 0 of 1
    without one."""
    env = os.environ if environ is None else environ
    name = launcher(env)
    if name is None:
        return Launched(0, 1, 0)
    rank, world, local = LAUNCHERS[name]
    if name == "slurm" and env.get(STEP_TASKS, "").isdigit():
        world = STEP_TASKS
    return Launched(int(env[rank]), int(env[world]), int(env.get(local) or 0))


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """The process's rank among its node's (`launched`)."""
    return launched(environ).local_rank


def local_gpu(rank_on_node: int) -> torch.device:
    """cuda:<rank_on_node mod the GPUs visible>, made the current device: what runs on `cuda` without an index (NCCL,
    a kernel's launch, torch.cuda's memory counters) then runs on it too."""
    device = torch.device("cuda", rank_on_node % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device
