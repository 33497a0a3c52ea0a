"""Which of its node's GPUs a rank uses: the one at its local rank, counted among the GPUs it sees.

A launcher that starts a node's ranks together (torchrun, `deepspeed --no_local_rank`: LOCAL_RANK; srun: SLURM_LOCALID)
lets each see all of the node's GPUs, so a plain `cuda` put every rank on cuda:0, the others idle. Where each rank sees
one GPU (srun --gpus-per-task, CUDA_VISIBLE_DEVICES per rank) the modulo gives that one. train's ranks
(train/distributed.py) and a split encode take theirs here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """The process's rank among its node's, from the launcher that gave its rank (RANK: LOCAL_RANK, SLURM_PROCID:
    SLURM_LOCALID); 0 without one."""
    env = os.environ if environ is None else environ
    for rank, local in (("RANK", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_LOCALID")):
        if rank in env:
            return int(env.get(local, 0))
    return 0


def local_gpu(rank_on_node: int) -> torch.device:
    """cuda:<rank_on_node mod the GPUs visible>, made the current device: what runs on `cuda` without an index (NCCL,
    a kernel's launch, torch.cuda's memory counters) then runs on it too."""
    device = torch.device("cuda", rank_on_node % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device
