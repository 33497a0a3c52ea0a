"""The trainer's optimizer (megadalle.train.engine.optimizer): AdamW, fused unless turned off, decay on matrices
only."""
import pytest
import torch
from torch import nn

from megadalle.config.train import TrainerConfig
from megadalle.train.engine import optimizer, optimizer_kind
from tests.unit.standin_apex import apex  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch):
    """The CPU's choice even where a GPU is visible."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))


@pytest.mark.parametrize("fused", [True, False])
def test_cpu_adamw_is_fused_unless_turned_off(fused):
    opt = optimizer(model(), TrainerConfig(fused_optimizer=fused, weight_decay=0.1))
    assert type(opt) is torch.optim.AdamW
    assert bool(opt.defaults["fused"]) is fused
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_fused_and_foreach_updates_agree():
    """The fused kernel is the same AdamW: a few updates from the same start end at the same weights."""
    trained = []
    for fused in (True, False):
        net = model()
        opt = optimizer(net, TrainerConfig(fused_optimizer=fused, weight_decay=0.1, lr=1e-2))
        for step in range(5):
            torch.manual_seed(step)
            loss = net(torch.randn(32, 8)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(trained[0], trained[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(trained[0], torch.cat([p.detach().flatten() for p in model().parameters()]))


@pytest.mark.parametrize("fused", [True, False])
def test_cuda_takes_torch_adamw_even_with_apex_importable(apex, fused):
    """Not apex's FusedAdam: its per-group step ran ahead under ZeRO-3 and its checkpoints did not load into AdamW."""
    apex("ok")
    opt = optimizer(model(), TrainerConfig(fused_optimizer=fused))
    assert type(opt) is torch.optim.AdamW
    assert bool(opt.defaults["fused"]) is fused
    assert optimizer_kind(opt) == "torch AdamW" + (" (fused)" if fused else "")
