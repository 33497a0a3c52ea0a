"""At ZeRO stage 0 in bf16 an edit between updates reaches DeepSpeed's fp32 masters and Adam's moments
(ParamEditor through train/masters.py), or the next step writes the old values back over the weights.

DeepSpeed wraps the torch optimizer in FP16_UnfusedOptimizer (one fp32 clone per weight; its other wrapper is built
only around a fused Adam of apex's or DeepSpeed's, which megadalle never passes), built here on the CPU as the
trainer builds it.
"""
from types import SimpleNamespace

import deepspeed.comm
import pytest
import torch
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

from megadalle.train.masters import whole_master
from megadalle.train.param_edit import ParamEditor


@pytest.fixture
def wrapped(monkeypatch):
    """Two bf16 weights in one group and the wrapper, whose constructor has given Adam its (zero) moments."""
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)  # the constructor logs on rank 0
    first = torch.nn.Parameter(torch.full((3,), 0.5, dtype=torch.bfloat16))
    second = torch.nn.Parameter(torch.full((2, 2), 2.0, dtype=torch.bfloat16))
    inner = torch.optim.AdamW([first, second], lr=0.0, weight_decay=0.0)
    return first, second, FP16_UnfusedOptimizer(inner, low_precision_dtype=torch.bfloat16)


def step(optimizer, *weights) -> None:
    for weight in weights:
        weight.grad = torch.zeros_like(weight)
    optimizer.step()


def test_a_clamp_reaches_the_master(wrapped):
    first, second, optimizer = wrapped
    ParamEditor(SimpleNamespace(optimizer=optimizer), 0).clamp(second, 0.0, 1.0)
    assert torch.equal(whole_master(second, optimizer), torch.ones(2, 2))
    assert torch.equal(whole_master(first, optimizer), torch.full((3,), 0.5))
    step(optimizer, first, second)  # lr 0: the weights become their masters again
    assert torch.equal(second.detach(), torch.ones(2, 2, dtype=torch.bfloat16))


def test_an_edit_reaches_the_master_and_the_moments(wrapped):
    first, second, optimizer = wrapped
    new = {"param": 3.0, "exp_avg": 0.25, "exp_avg_sq": 4.0}
    ParamEditor(SimpleNamespace(optimizer=optimizer), 0).apply(second, lambda t, what: torch.full_like(t, new[what]))
    master = whole_master(second, optimizer)
    assert torch.equal(master, torch.full((2, 2), 3.0))
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(optimizer.optimizer.state[master][key], torch.full((2, 2), new[key]))
        assert not optimizer.optimizer.state[whole_master(first, optimizer)][key].any(), "the other weight's"
    assert torch.equal(whole_master(first, optimizer), torch.full((3,), 0.5))
    step(optimizer, first, second)
    assert torch.equal(second.detach(), torch.full((2, 2), 3.0, dtype=torch.bfloat16))


def test_the_masters_are_found_once_per_optimizer(wrapped, monkeypatch):
    """CLIP's clamp looks its logit scale's master up after every update: one scan of the masters, not one a step."""
    from megadalle.train import masters

    first, second, optimizer = wrapped
    scans = []
    scan = masters.stage0_masters
    monkeypatch.setattr(masters, "stage0_masters", lambda optimizer: scans.append(1) or scan(optimizer))
    editor = ParamEditor(SimpleNamespace(optimizer=optimizer), 0)
    for _ in range(3):
        editor.clamp(second, 0.0, 1.0)
        step(optimizer, first, second)
    assert torch.equal(whole_master(second, optimizer), torch.ones(2, 2))
    assert torch.equal(whole_master(first, optimizer), torch.full((3,), 0.5))
    assert len(scans) == 1


def test_a_group_added_or_loaded_is_found():
    """A torch optimizer's add_param_group adds a group, its load_state_dict puts new ones in: the masters found
    before are found again, with the new parameter among them."""
    first, second = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([first], lr=0.0)
    assert whole_master(first, optimizer) is first and whole_master(second, optimizer) is None
    optimizer.add_param_group({"params": [second]})
    assert whole_master(second, optimizer) is second
    optimizer.load_state_dict(optimizer.state_dict())
    assert whole_master(first, optimizer) is first and whole_master(second, optimizer) is second
    optimizer.param_groups[1]["params"] = [third := torch.nn.Parameter(torch.ones(4))]
    assert whole_master(second, optimizer) is None and whole_master(third, optimizer) is third
