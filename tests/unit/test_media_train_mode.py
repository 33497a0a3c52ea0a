"""A sample grid leaves the model in training mode (train/media.py `collect`).

`collect` draws in eval mode; a model left there after the first grid trained on with dropout off for the rest of
the run (model.dropout > 0), a loss curve unlike a run's without grids. The grid tests train models without dropout,
so only the mode itself shows it.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from megadalle.train import media


class Drawing:
    """A task whose media records the mode the model drew in."""

    def __init__(self):
        self.drawn_in: list[bool] = []

    def media(self, model: nn.Module, step: int) -> dict:
        self.drawn_in.append(model.training or any(m.training for m in model.modules()))
        return {}


def test_the_model_trains_on_after_a_grid_drawn_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.1)))
    engine = SimpleNamespace(zero_optimization_stage=lambda: 1)
    built = SimpleNamespace(model=model, engine=engine, pipeline=None, dtype=torch.float32, device=torch.device("cpu"))
    task = Drawing()
    for step in (1, 3):
        assert media.collect(task, built, step, rank=0) == {}
        assert all(m.training for m in model.modules()), f"after the grid of step {step}: " + \
            ", ".join(name or "model" for name, m in model.named_modules() if not m.training)
    assert task.drawn_in == [False, False], "each grid is drawn in eval mode"
