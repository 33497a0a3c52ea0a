"""train/apex_adam: an Adam state saved by apex's FusedAdam (the step per param group, only the moments per
parameter) goes on in the torch AdamW megadalle builds; before, the load raised KeyError 'step', called damage."""
import copy

import pytest
import torch
from torch import nn

from megadalle.train import apex_adam
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.checkpoint_load import unreadable
from megadalle.train.engine import optimizer, param_groups
from tests.unit.adam_net import CONFIG, model
from tests.unit.standin_apex import apex  # noqa: F401 - the fixture


def train(net: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        torch.manual_seed(step)
        opt.zero_grad()
        net(torch.randn(32, 8)).square().mean().backward()
        opt.step()


def weights(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def apex_trained(steps: int):
    from apex.optimizers import FusedAdam

    net = model()
    opt = FusedAdam(param_groups(net, CONFIG.weight_decay), lr=CONFIG.lr, betas=tuple(CONFIG.betas), eps=CONFIG.eps)
    train(net, opt, range(steps))
    return net, opt


def test_apex_state_goes_on_in_torch_adamw(apex):
    apex("ok")
    net, fused_adam = apex_trained(3)
    saved = copy.deepcopy(fused_adam.state_dict())  # a state dict holds the live moments, which training goes on with
    assert [group["step"] for group in saved["param_groups"]] == [3, 3]
    assert all("step" not in state for state in saved["state"].values())
    twin = model()
    twin.load_state_dict(net.state_dict())
    opt = optimizer(twin, CONFIG)
    apex_adam.accept(opt, zero3=False)
    opt.load_state_dict(saved)
    assert all(group["fused"] and group["decoupled_weight_decay"] and "step" not in group for group in opt.param_groups)
    assert [float(opt.state[p]["step"]) for p in twin.parameters()] == [3.0] * 6
    train(net, fused_adam, range(3, 6))
    train(twin, opt, range(3, 6))
    torch.testing.assert_close(weights(twin), weights(net), rtol=1e-5, atol=1e-6)


def test_torch_state_is_left_alone():
    net = model()
    opt = optimizer(net, CONFIG)
    train(net, opt, range(2))
    assert apex_adam.from_apex(opt, opt.state_dict(), zero3=False) is None


def zero3_state(step: int) -> dict:
    """ZeRO-3's saved layout: each group lists its sub-groups' flat partitions, apex stepped it once for each."""
    moments = {"exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}
    return {"state": {0: dict(moments), 1: dict(moments)},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.96), "eps": 1e-8, "weight_decay": 0.0,
                              "bias_correction": True, "step": step, "params": [0, 1]}]}


def test_zero3_step_counts_updates_not_sub_groups():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))], fused=True)
    converted = apex_adam.from_apex(opt, zero3_state(16), zero3=True)
    assert [state["step"] for state in converted["state"].values()] == [8.0, 8.0]
    with pytest.raises(CheckpointError, match=r"saved with apex FusedAdam \(per-group step\) under ZeRO-3"):
        apex_adam.from_apex(opt, zero3_state(15), zero3=True)


def test_settle_after_a_universal_load():
    """DeepSpeed's universal loading copies the saved groups' keys into the optimizer's and no step into the state."""
    net = model()
    opt = optimizer(net, CONFIG)
    train(net, opt, range(2))
    for group in opt.param_groups:
        group.update(step=2, bias_correction=True)
        for p in group["params"]:
            del opt.state[p]["step"]
    apex_adam.settle(opt)
    assert all("step" not in group and "bias_correction" not in group for group in opt.param_groups)
    assert [float(opt.state[p]["step"]) for p in net.parameters()] == [2.0] * 6
    train(net, opt, range(2, 3))
    assert [float(opt.state[p]["step"]) for p in net.parameters()] == [3.0] * 6


def test_unconvertible_apex_state_is_named_not_damage(tmp_path):
    message = unreadable(KeyError("step"), tmp_path / "step_00000006", universal=tmp_path / "universal")
    assert "saved with apex FusedAdam (per-group step)" in message and "damaged" not in message


def test_stage0_bf16_flat_masters_are_refused_by_name(apex, monkeypatch, tmp_path):
    """apex at bf16 ZeRO stage 0 made DeepSpeed wrap FusedAdam in its FP16_Optimizer (flat fp32 masters); that state
    does not load into the FP16_UnfusedOptimizer built today (KeyError 'dynamic_loss_scale'), once called damage."""
    import deepspeed.comm
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    apex("ok")
    from apex.optimizers import FusedAdam

    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    saved_net, net = model().to(torch.bfloat16), model().to(torch.bfloat16)
    saved_by_apex = FP16_Optimizer(FusedAdam(param_groups(saved_net, CONFIG.weight_decay), lr=CONFIG.lr),
                                   low_precision_dtype=torch.bfloat16)
    saved = saved_by_apex.state_dict()
    assert "fp32_groups_flat" in saved
    today = FP16_UnfusedOptimizer(optimizer(net, CONFIG), low_precision_dtype=torch.bfloat16)
    apex_adam.accept(today.optimizer, zero3=False)
    with pytest.raises(KeyError) as err:
        today.load_state_dict(saved)
    message = unreadable(err.value, tmp_path / "checkpoints" / "step_00000006", universal=None)
    assert "ZeRO stage 0 in bf16 with apex's FusedAdam" in message and "FP16_Optimizer" in message
    step = tmp_path / "checkpoints" / "step_00000006"
    assert (f"`megadalle export run={tmp_path} checkpoint={step} output=DIR weights_only=true dtype=fp32` reads its "
            "fp32 masters (a pipeline's: dtype=bf16)") in message and "damaged" not in message
