"""Typed keys that must reach DeepSpeed and the optimizer as the user set them, read back by the readers that act
on them: DeepSpeed's own config parser (deepspeed.runtime.config.DeepSpeedConfig) and a hand-computed AdamW update.

Each of these once had no test: replacing the user's value with its default or a constant (reduce_bucket_size,
overlap_comm, eps) or checkpoint tag validation's FAIL with DeepSpeed's default WARN kept every test green.
"""
import pytest
import torch
from torch import nn

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train.engine import ds_config, optimizer

LAYOUTS = ["zero1", "zero2", "zero3", "pipe"]


def typed(cls, group: str, *overrides: str):
    """The `group` node of train's config composed with `overrides`, as the typed config train builds from it."""
    return build(cls, compose("train", list(overrides))[group], group)


def deepspeed_reads(name: str, *overrides: str):
    """DeepSpeed's parse of the JSON our configs produce for layout `name` (one process: dp_world=1, so its batch
    size arithmetic agrees with the world size it sees)."""
    from deepspeed.runtime.config import DeepSpeedConfig as DeepSpeedParsed

    ds = typed(DeepSpeedConfig, "deepspeed", f"deepspeed={name}", *overrides)
    return DeepSpeedParsed(ds_config(TrainerConfig(), ds, dp_world=1, dtype=torch.float32))


@pytest.mark.parametrize("name", LAYOUTS)
def test_reduce_bucket_size_reaches_zero_optimization(name):
    """zero_optimization.reduce_bucket_size (DeepSpeed docs): elements reduced at a time; ours, not a constant."""
    assert deepspeed_reads(name, "deepspeed.reduce_bucket_size=1234").zero_config.reduce_bucket_size == 1234


@pytest.mark.parametrize("name", LAYOUTS)
def test_checkpoint_tags_that_differ_across_ranks_fail(name):
    """checkpoint.tag_validation (DeepSpeed docs: Ignore, Warn or Fail; Warn by default): ranks saving under
    different tags would write one checkpoint from mixed steps, so train asks for Fail."""
    parsed = deepspeed_reads(name)
    assert parsed.checkpoint_tag_validation_enabled and parsed.checkpoint_tag_validation_fail


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3"])
def test_overlap_comm_false_turns_overlap_off(name):
    """zero_optimization.overlap_comm=false is DeepSpeed's off switch; left out, ZeRO-3 would overlap anyway
    (DeepSpeed's default for stage 3 is on)."""
    assert deepspeed_reads(name, "deepspeed.overlap_comm=false").zero_config.overlap_comm is False
    assert deepspeed_reads(name, "deepspeed.overlap_comm=true").zero_config.overlap_comm is True


def adamw_by_hand(weight: list[float], grads: list[list[float]], lr, betas, eps, weight_decay) -> list[float]:
    """AdamW as torch.optim.AdamW's documentation writes it (bias-corrected moments, decoupled decay), in floats."""
    (b1, b2), m, v = betas, [0.0] * len(weight), [0.0] * len(weight)
    for t, grad in enumerate(grads, 1):
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)) ** 0.5 + eps)
            weight[i] = weight[i] * (1 - lr * weight_decay) - lr * step
    return weight


def test_trainer_lr_betas_and_eps_reach_the_adamw_train_builds():
    """Values far from both torch's AdamW defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8) and train's, so that a
    constant in their place shows; eps this large changes every update, betas the second one."""
    trainer = typed(TrainerConfig, "trainer", "trainer.lr=0.1", "trainer.betas=[0.5,0.75]", "trainer.eps=0.25",
                    "trainer.weight_decay=0.2")
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    opt = optimizer(net, trainer)
    assert (opt.defaults["lr"], tuple(opt.defaults["betas"]), opt.defaults["eps"]) == (0.1, (0.5, 0.75), 0.25)
    grads = [[1.0, -0.5], [0.5, 2.0]]
    for grad in grads:
        net.weight.grad = torch.tensor([grad])
        opt.step()
    expected = adamw_by_hand([1.0, -2.0], grads, lr=0.1, betas=(0.5, 0.75), eps=0.25, weight_decay=0.2)
    torch.testing.assert_close(net.weight.detach(), torch.tensor([expected]), rtol=1e-6, atol=1e-7)
