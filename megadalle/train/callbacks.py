"""Callbacks: small pieces that watch the loop (throughput, console, wandb), OLMo-core style.

The loop calls, on every rank, `start(info)` once, `step(step, metrics)` after every update (a
callback may add keys, e.g. tokens/s, for the ones after it), `log(step, metrics)` every
`log_every` updates, `media(step, values)` when the task produced media, then `ending(failing, stopped)`
and `end()`, also when the run failed, even in `start` (an `end()` must expect that its `start` did not run or
finish).
Callbacks that write (console, wandb) act on rank 0 only.
"""
from __future__ import annotations

import sys
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
    """What wandb records as the run's config: run.json's (absolute paths, digests) and the layout (loop.Trainer)."""
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

    def ending(self, failing: bool, stopped: bool) -> None:
        """How the run ends, said just before `end()`: `failing` (an error goes on), `stopped` for a signal (its
        checkpoint saved, the job requeued), or neither (done). wandb records it as the run's state."""

    def end(self) -> None:
        pass


def end_all(callbacks: list[Callback], failing: bool, stopped: bool = False, prefix: str = "[train]") -> None:
    """`ending()` and `end()` of every callback, though one fails: one failing (wandb's finish on a full disk)
    skipped the others' and whatever the caller does after (the run lock's release, in-process). The first failure
    is raised once all ran, unless the run is `failing` already: its own error says what went wrong, and an end()'s
    is one line more, under `prefix` (the running verb's)."""
    first = None
    for callback in callbacks:
        try:
            callback.ending(failing, stopped)
            callback.end()
        except Exception as err:
            if failing:
                said = str(err).strip().splitlines()
                print(f"{prefix} {type(callback).__name__}.end() failed too: {type(err).__name__}"
                      + (f": {said[0]}" if said else ""), file=sys.stderr, flush=True)
            first = first or err
    if first is not None and not failing:
        raise first
