"""Rank 0's plain-text record: a progress line every `log_every` updates and every update's
metrics appended to `<run>/metrics.jsonl` (what tests and people compare between runs; a resumed
run appends, so the last line for a step wins)."""
from __future__ import annotations

import json

from tqdm import tqdm

from megadalle.train.callbacks import Callback, RunInfo

SHOWN = ("loss", "val/loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu", "mem_gib", "skipped_steps")


class Console(Callback):
    def __init__(self):
        self.file = None
        self.bar = None

    def start(self, info: RunInfo) -> None:
        if info.rank != 0:
            return
        self.file = open(info.run_dir / "metrics.jsonl", "a")
        # disable=None: a bar on a terminal, none in batch logs (Slurm output files), where the lines suffice.
        self.bar = tqdm(total=info.total_steps, initial=info.start_step, desc="train", dynamic_ncols=True,
                        disable=None)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        self.bar.update(1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        tqdm.write(f"step {step}: " + " ".join(f"{k}={metrics[k]:.4g}" for k in SHOWN if k in metrics))

    def end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.bar.close()
