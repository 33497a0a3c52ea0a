"""How a training run ended, as a training verb tells it: its last line on rank 0 and its exit status.

The loop produces it (Trainer.fit, or a stop before the first update); the verbs act on it once training has
returned (`train`, `train-dvae` and `train-clip` report it and exit with its status, which Slurm's requeue reads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megadalle.train.signals import exit_status


@dataclass
class Result:
    run_dir: Path
    step: int | None
    """Updates completed; None when a signal stopped the run before it had loaded its checkpoint."""
    stopped_by_signal: bool
    losses: list[float]
    """This process's losses of the updates it ran (global means)."""
    rank: int = 0
    verb: str = "train"
    """The verb that ran it (train, train-dvae, train-clip: RunOptions.verb), which its last line names."""
    engine: Any = None
    """The DeepSpeed engine, still live (e.g. to evaluate the trained model; ZeRO-3 needs it for gathering); None
    after a stop before the first update."""
    model: Any = None
    """The task's plain model (its parameters are the engine's; under pipelines only this stage's are trained)."""

    @property
    def stopped_before_first_update(self) -> bool:
        """A signal stopped the start-up: nothing was trained or saved (a stop in the loop comes after an update)."""
        return self.stopped_by_signal and not self.losses

    def report(self) -> None:
        """The training verb's last line, on rank 0: how the run ended and where it lives."""
        if self.rank != 0:
            return
        if self.stopped_before_first_update:
            how = "stopped by signal before its first update, nothing to save: rerunning resumes from the last checkpoint"
        else:
            how = f"{'stopped by signal' if self.stopped_by_signal else 'finished'} at step {self.step}{self.skips()}"
        print(f"[{self.verb}] {how}; run directory {self.run_dir}", flush=True)

    def skips(self) -> str:
        """How many of this run's updates had a non-finite loss, which ZeRO 1-3 skip: a run stuck in them (weights
        that overflow every forward never change again) trained on to its end and said only "finished"."""
        bad = sum(not math.isfinite(loss) for loss in self.losses)
        if not bad:
            return ""
        return (f", {'all' if bad == len(self.losses) else bad} of its {len(self.losses)} updates skipped for a "
                "non-finite loss (metrics.jsonl: skipped_steps): lower trainer.lr, or resume from an earlier "
                "checkpoint (resume=<its step_* directory>)")

    def exit_status(self, steps: int) -> int:
        """A training verb's exit status for a run of `steps` updates (signals.exit_status)."""
        return exit_status(self.stopped_by_signal, self.step, steps)


class StoppedBeforeFirstUpdate(Exception):
    """A stop signal reached a rank during the start-up: every rank leaves it together (`Trainer._stop_point`)."""

    def __init__(self, run_dir: Path, step: int | None, rank: int, verb: str):
        super().__init__(f"stopped by signal before the first update (rank {rank})")
        self.result = Result(run_dir, step, True, [], rank, verb)
