"""Rank 0's plain-text record: a progress line every `log_every` updates and every update's
metrics appended to `<run>/metrics.jsonl` (what tests and people compare between runs; a resumed
run appends, so the last line for a step wins). Data problems that raise no error (captions cut
to text_len, images upscaled to the model's input) are said once, at the first update that shows them.

A line the disk does not take (full, over quota) is taken back whole and raised as one line
(`disk_full.RunFileError`): a half line would end the file the resumed run appends to. The file is
unbuffered, so closing it has nothing left to write and fails no second time."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time

from tqdm import tqdm

from megadalle.train.callbacks import Callback, RunInfo
from megadalle.train.disk_full import one_line

WARNINGS = {
    "captions_cut": "{value:.1%} of this update's captions are longer than text_len and lose their last tokens "
                    "(metric captions_cut; `megadalle tokenizer` prints the captions' lengths in tokens)",
    "images_upscaled": "{value:.1%} of this update's images are smaller than the model's input and enlarged to it, a "
                       "blurry target (metric images_upscaled); `megadalle index DIR min_side=<input size>` skips "
                       "them in tars from elsewhere",
}
"""Metrics that should stay 0: a warning at the first update where one is not."""

SHOWN = ("loss", "val/loss", "text_loss", "image_loss", "clip_acc", "temperature", "perplexity", "dead_codes",
         "val/perplexity", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu", "mem_gib", "skipped_steps")
"""What a progress line shows of the metrics an update logs, those of its task among them: the Transformer's loss
parts, CLIP's accuracy and temperature, the dVAE's codebook use (README's sign of a dVAE losing its codes), which
reached only metrics.jsonl and wandb, while a log is what a user with logger=none, or an unsynced wandb, watches."""


class Console(Callback):
    def __init__(self, verb: str = "train"):
        self.verb = verb
        """The running verb, the progress bar's label."""
        self.file = None
        self.bar = None
        self.warned: set[str] = set()
        self.first: tuple[int, float] | None = None
        """(step, time) of this process's first update: the rate its ETA is reckoned at."""

    def start(self, info: RunInfo) -> None:
        if info.rank != 0:
            return
        path = info.run_dir / "metrics.jsonl"
        with one_line(path):
            self.file = open(path, "ab", buffering=0)
        # disable=None: a bar on a terminal, none in batch logs (Slurm output files), where the lines suffice.
        self.bar = tqdm(total=info.total_steps, initial=info.start_step, desc=self.verb, dynamic_ncols=True,
                        disable=None)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is None:
            return
        self._append((json.dumps({"step": step, **metrics}) + "\n").encode())
        self.bar.update(1)
        self.first = self.first or (step, time.monotonic())
        for name, message in WARNINGS.items():
            if metrics.get(name, 0) > 0 and name not in self.warned:
                self.warned.add(name)
                tqdm.write(f"[{self.verb}] warning: step {step}: " + message.format(value=metrics[name]),
                           file=sys.stderr)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        line = f"step {step}: " + " ".join(f"{k}={metrics[k]:.4g}" for k in SHOWN if k in metrics)
        tqdm.write(line + (self._progress(step) if self.bar.disable else ""))

    def _progress(self, step: int) -> str:
        """Where the bar is off (a log), what it would say: updates done of the run's, and the time left at this
        process's mean rate since its first update (one update's rate, which the line shows, varies several-fold)."""
        done, total = step + 1, self.bar.total
        said = f" | {done}/{total} updates"
        first_step, first_time = self.first or (step, 0.0)
        if step > first_step and total > done:
            left = (time.monotonic() - first_time) / (step - first_step) * (total - done)
            said += f", eta {datetime.timedelta(seconds=round(left))}"
        return said

    def _append(self, line: bytes) -> None:
        """`line` at the end of metrics.jsonl, whole or not at all (a write may take part of it, then fail)."""
        end = os.lseek(self.file.fileno(), 0, os.SEEK_END)
        with one_line(self.file.name):
            try:
                while line:
                    line = line[self.file.write(line):]
            except OSError:
                with contextlib.suppress(OSError):  # a file system gone read-only takes nothing back
                    os.ftruncate(self.file.fileno(), end)
                raise

    def end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.bar.close()
            self.file = None

