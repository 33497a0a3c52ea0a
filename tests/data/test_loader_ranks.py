"""Real ranks (gloo processes started like torchrun's) with DataLoader workers: a collective every
step proves that no rank hangs or runs dry when 4 uneven shards meet 2 ranks x 3 workers, and the
run's checkpointed loader state resumed on 1 rank gives the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from megadalle.data.loader import image_loader
from megadalle.train.distributed import exit_process, free_port

STEPS, RESUME_AT, BATCH = 8, 4, 6


def run_rank(root: str, out: str) -> None:
    """One rank, started like torchrun starts it: a fresh interpreter with RANK, WORLD_SIZE, MASTER_*."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    loader = image_loader(root, BATCH, 8, num_workers=3)  # rank and world from the environment
    gathered_steps = []
    for batch in loader:
        ids = torch.tensor([int(k) for k in batch["key"]])
        parts = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(parts, ids)  # hangs if any rank stopped or got a different batch size
        gathered_steps.append(torch.cat(parts).tolist())
        if rank == 0 and loader.step == RESUME_AT:
            with open(os.path.join(out, "state.json"), "w") as f:
                json.dump(loader.state_dict(), f)
        if len(gathered_steps) == STEPS:
            break
    if rank == 0:
        with open(os.path.join(out, "steps.json"), "w") as f:
            json.dump(gathered_steps, f)
    del loader  # its workers are shut down here, not skipped by the exit below
    exit_process(0)


def launch(world: int, root, out) -> list[list[int]]:
    port, repo = free_port(), Path(__file__).resolve().parents[2]
    code = f"from tests.data.test_loader_ranks import run_rank; run_rank({str(root)!r}, {str(out)!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=repo, env={
        **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r), "WORLD_SIZE": str(world)})
        for r in range(world)]
    assert [p.wait(timeout=240) for p in procs] == [0] * world
    return json.loads((out / "steps.json").read_text())


@pytest.mark.distributed
def test_two_ranks_then_resume_on_one(image_shards, tmp_path):
    two = launch(2, image_shards, tmp_path)
    assert all(len(step) == len(set(step)) == BATCH for step in two)
    first_epoch = [i for step in two for i in step][:23]
    assert sorted(first_epoch) == list(range(23))
    one = image_loader(image_shards, BATCH, 8, rank=0, world_size=1)
    one.load_state_dict(json.loads((tmp_path / "state.json").read_text()))
    resumed = [[int(k) for k in b["key"]] for _, b in zip(range(STEPS - RESUME_AT), one)]
    assert [set(s) for s in resumed] == [set(s) for s in two[RESUME_AT:]]
