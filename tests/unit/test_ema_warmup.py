"""The EMA's decay warms up (train/ema.py): after one update it is nearly the live weights, and a short run no
longer exports mostly its random initialisation (a fixed 0.999 kept 74% of it after 300 updates)."""
import pytest
import torch
from torch import nn

from megadalle.train.ema import EMA, warmed_decay


@pytest.mark.parametrize("decay, step, expected", [(0.999, 0, 0.1), (0.999, 1, 2 / 11), (0.999, 90, 91 / 100),
                                                   (0.99, 889, 890 / 899), (0.99, 891, 0.99),
                                                   (0.999, 10**6, 0.999), (0.5, 0, 0.1), (0.5, 8, 0.5)])
def test_the_decay_is_tfs_num_updates_warm_up(decay, step, expected):
    assert warmed_decay(decay, step) == pytest.approx(expected, rel=1e-12)


def run(updates: int, decay: float) -> tuple[nn.Linear, torch.Tensor, EMA]:
    """A layer whose every update sets its weights to 1 (the init is N(0, 1)): the EMA's share of the init is
    (ema - 1) / (init - 1)."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.normal_()
    init = layer.weight.detach().clone()
    ema = EMA(layer.named_parameters(), decay)
    for step in range(updates):
        with torch.no_grad():
            layer.weight.fill_(1.0)
        ema.update(step)
    return layer, init, ema


def test_after_one_update_the_ema_is_the_live_weights_but_the_warm_ups_weight():
    layer, init, ema = run(1, 0.999)
    live = layer.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"].view_as(live), 0.1 * init + 0.9 * live, rtol=1e-6, atol=1e-7)
    assert (ema.shadow["weight"].view_as(live) - live).abs().max() <= 0.1 * (init - live).abs().max() + 1e-7


@pytest.mark.parametrize("updates, decay, fixed_share", [(300, 0.999, 0.74), (200, 0.99, 0.13), (20, 0.999, 0.98)])
def test_a_short_run_keeps_little_of_the_init(updates, decay, fixed_share):
    layer, init, ema = run(updates, decay)
    share = ((ema.shadow["weight"].view_as(init) - 1) / (init - 1)).abs().max().item()
    assert decay ** updates == pytest.approx(fixed_share, abs=0.01)  # what the fixed decay kept
    assert share < 1e-4  # fp32 rounding of the average near 1: the warm-up itself keeps 1e-17 after 300
