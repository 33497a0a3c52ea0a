"""Which updates a run logs, and at which step wandb files them (train/loop.py `_report`, train/wandb_log.py).

Logging (the console line and wandb, the callbacks' `log`) comes every trainer.log_every updates and after the
final one: a run whose steps were no multiple of log_every ended its console and wandb one or more updates before
its last loss (only metrics.jsonl held it). And wandb's step is metrics.jsonl's `step` (the 0-based update index
the console and the media also use): one off, every wandb point sat beside another update's row. One run of 3
updates logging every 2 shows both: it logs updates 1 and 2 (0-based), the second only as the last.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import wandb

from megadalle.cli import main

STEPS, EVERY = 3, 2
RUN = ["train", "data=synthetic", "model=tiny", "trainer=tiny", f"trainer.steps={STEPS}", "trainer.warmup_steps=0",
       f"trainer.log_every={EVERY}", "trainer.checkpoint_every=0", "data.num_workers=0", "logger=wandb"]


class RecordingRun:
    """A wandb run that keeps every `log` call: (step, metrics)."""

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def finish(self, exit_code=None):
        pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(metrics.jsonl's rows by step, the console's output, the wandb run) of one short run."""
    run_dir, fake = tmp_path_factory.mktemp("logged") / "run", RecordingRun()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(wandb, "init", lambda **kwargs: fake)
        assert main([*RUN, f"run_dir={run_dir}"]) == 0
    rows = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert sorted(rows) == list(range(STEPS))
    return rows, out.getvalue(), fake


def test_every_log_every_th_update_and_the_last_are_printed_with_their_loss(trained):
    rows, out, _ = trained
    printed = dict(re.findall(r"^step (\d+): loss=(\S+)", out, re.MULTILINE))
    assert list(map(int, printed)) == [1, 2], out  # the 2nd update (log_every) and the 3rd, the last
    for step, loss in printed.items():
        assert loss == f"{rows[int(step)]['loss']:.4g}", step


def test_wandb_gets_the_same_updates_each_at_its_metrics_jsonl_step(trained):
    """Each wandb point is its metrics.jsonl row: the same step, the same values (the loss, the samples seen)."""
    rows, _, run = trained
    assert [step for step, _ in run.logged] == [1, 2]
    for step, metrics in run.logged:
        assert metrics == {k: rows[step][k] for k in metrics}, step
        assert metrics["samples_seen"] == (step + 1) * 4, "micro_batch 4 x 1 rank per update, counted by hand"
