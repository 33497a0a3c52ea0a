"""Callbacks: small pieces that watch the loop (throughput, console, wandb), OLMo-core style.

The loop calls, on every rank, `start(info)` once, `step(step, metrics)` after every update (a
callback may add keys, e.g. tokens/s, for the ones after it), `log(step, metrics)` every
`log_every` updates, `media(step, values)` when the task produced media, and `end()`.
Callbacks that write (console, wandb) act on rank 0 only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunInfo:
    run_dir: Path
    rank: int
    world_size: int
    start_step: int
    total_steps: int
    config: dict = field(default_factory=dict)
    """The full composed config, stored with the run and sent to wandb."""
    wandb_id: str | None = None
    """The wandb run id of a resumed run (None for a new run); the wandb callback sets it."""


class Callback:
    def start(self, info: RunInfo) -> None:
        pass

    def step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def media(self, step: int, values: dict[str, Any]) -> None:
        pass

    def end(self) -> None:
        pass
