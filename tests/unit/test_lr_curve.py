"""The learning-rate curve, value by value: a linear warm-up that reaches `lr` at its last update, a cosine or linear
decay from `lr` at the first update after it, and `min_lr` from the end of the decay span on (the paper warms up to
its peak, then decays). The other tests compared lr_at with itself or checked one end; an off-by-one at the
warm-up's end (update `warmup_steps` trained above the peak), a decay past its span (a cosine climbing back up, a
linear decay going negative) and a resumed scheduler rejoining its curve one update late all passed them. The
reference here is written out by hand, and the real training run checks the rate the optimizer steps with."""
import json
import math

import pytest
import torch

from megadalle.cli import main
from megadalle.config.train import TrainerConfig
from megadalle.train.schedule import lr_at, rejoin, scheduler


def reference(step: int, lr: float, min_lr: float, warmup: int, span: int, decay: str) -> float:
    """The curve as the paper and the trainer config describe it, written independently of lr_at."""
    if step < warmup:
        return lr * (step + 1) / warmup  # update warmup - 1 is the first at the peak
    done = min(step - warmup, span) / span
    if decay == "constant":
        return lr
    falling = (math.cos(math.pi * done) + 1) / 2 if decay == "cosine" else 1 - done
    return min_lr + (lr - min_lr) * falling


CURVE = dict(lr=1.0, min_lr=0.1, warmup_steps=4, steps=20, decay_steps=4)
"""Warm-up over updates 0-3, decay over 4-8 (4 updates), the floor from update 8 to the run's end."""


@pytest.mark.parametrize("decay,expected", [
    ("cosine", [0.25, 0.5, 0.75, 1.0, 1.0, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, 0.55,
                0.1 + 0.9 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.1, 0.1, 0.1, 0.1]),
    ("linear", [0.25, 0.5, 0.75, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1, 0.1, 0.1]),
    ("constant", [0.25, 0.5, 0.75, 1.0] + [1.0] * 8),
])
def test_the_curve_value_by_value(decay, expected):
    cfg = TrainerConfig(decay=decay, **CURVE)
    assert [lr_at(step, cfg) for step in range(12)] == pytest.approx(expected, abs=1e-12)
    assert [lr_at(step, cfg) for step in (12, 19)] == pytest.approx([expected[-1]] * 2, abs=1e-12)


def test_without_decay_steps_the_decay_lasts_until_the_run_ends():
    cfg = TrainerConfig(lr=2e-3, min_lr=1e-4, warmup_steps=3, steps=13, decay_steps=None, decay="linear")
    assert [lr_at(step, cfg) for step in range(14)] == pytest.approx(
        [reference(step, 2e-3, 1e-4, 3, 10, "linear") for step in range(14)], abs=1e-15)
    assert lr_at(2, cfg) == pytest.approx(2e-3) and lr_at(13, cfg) == pytest.approx(1e-4)


def test_a_loaded_scheduler_rejoins_the_new_curve_at_the_update_it_resumes_from():
    """A checkpoint saved after 6 updates of a 10-update run, resumed with steps=30: update 6's rate is the
    longer curve's at update 6, not at update 5 nor the old curve's."""
    old = TrainerConfig(lr=1.0, min_lr=0.0, warmup_steps=2, steps=10, decay="linear")
    new = TrainerConfig(lr=1.0, min_lr=0.0, warmup_steps=2, steps=30, decay="linear")
    weight = torch.nn.Parameter(torch.zeros(2))
    saving = scheduler(torch.optim.SGD([weight], lr=1.0), old)
    for _ in range(6):
        saving.optimizer.step()
        saving.step()
    optimizer = torch.optim.SGD([weight], lr=1.0)
    resumed = scheduler(optimizer, new)  # built before the load, as engine.build does
    optimizer.load_state_dict(saving.optimizer.state_dict())
    resumed.load_state_dict(saving.state_dict())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(reference(6, 1.0, 0.0, 2, 8, "linear"))  # the old curve's
    rejoin(resumed)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(reference(6, 1.0, 0.0, 2, 28, "linear"))
    assert resumed.get_last_lr() == [optimizer.param_groups[0]["lr"]]


def test_a_training_run_steps_its_optimizer_at_the_curves_rate(tmp_path, monkeypatch):
    """The scheduler's wiring: DeepSpeed steps it once per update, so the rate AdamW updates with at update n (and
    the logged lr) is the curve's at n, through the warm-up, the decay and the floor after the decay span."""
    monkeypatch.chdir(tmp_path)
    used = []
    step = torch.optim.AdamW.step

    def spy(optimizer, *args, **kwargs):
        used.append([group["lr"] for group in optimizer.param_groups])
        return step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    steps = 8
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", f"trainer.steps={steps}",
                 "trainer.lr=1e-3", "trainer.min_lr=1e-4", "trainer.warmup_steps=2", "trainer.decay_steps=3",
                 "trainer.decay=linear", "trainer.log_every=1", "logger=none", f"run_dir={tmp_path / 'run'}"]) == 0
    expected = [reference(n, 1e-3, 1e-4, 2, 3, "linear") for n in range(steps)]
    assert expected[:6] == pytest.approx([5e-4, 1e-3, 1e-3, 7e-4, 4e-4, 1e-4])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows if "loss" in row] == pytest.approx(expected, rel=1e-9)
    assert used and len(used) % steps == 0, used  # ZeRO-1 steps AdamW once per parameter group
    calls = len(used) // steps
    for n, rate in enumerate(expected):
        for lrs in used[n * calls:(n + 1) * calls]:
            assert lrs == pytest.approx([rate] * len(lrs), rel=1e-9), (n, lrs)
