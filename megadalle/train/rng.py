"""Capture and restore every random generator a step touches (python, numpy, torch, cuda).

States are stored as tensors, ints and tuples only, so they load with torch.load(weights_only=True).
Each rank saves its own: dropout masks differ per rank, and a resumed run must draw the same ones.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def file_name(rank: int) -> str:
    """Rank `rank`'s generator states in a checkpoint directory."""
    return f"rng_rank{rank:05d}.pt"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
