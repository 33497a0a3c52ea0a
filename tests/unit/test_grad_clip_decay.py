"""Two of the paper's optimisation choices reach the optimizer in every layout: gradient clipping at trainer.grad_clip
(the paper's norm 4) and weight decay on the matrices alone (biases and layer-norm gains are not shrunk).

DeepSpeed clips: trainer.grad_clip reaches it only through its config, and a config that dropped it trained
unclipped with nothing to show it (grad_norm, logged before the clip, is the same either way). Weight decay is
grouped by each parameter's number of dimensions, which under ZeRO-3 is `ds_shape`'s: there every parameter's own
`shape` is the empty partition placeholder, and grouping by it decayed nothing. Each run here steps the real engine
and reads what torch's AdamW receives: the norm of the gradients it updates with, and which parameters it decays."""
import json
import math

import pytest
import torch
from torch import nn

import megadalle.train.engine as engine
from megadalle.cli import main
from megadalle.config.train import DeepSpeedConfig, TrainerConfig

CLIP, DECAY, STEPS = 0.05, 0.045, 2
"""A clip far below the tiny model's first gradient norms (about 1-2), so every update is clipped."""


def plain(name: str) -> bool:
    """The tiny Transformer's parameters that must not decay, by what they are: biases and layer-norm gains."""
    return name.endswith(".bias") or name.rsplit(".", 2)[-2] in ("ln_attn", "ln_mlp", "ln")


def test_the_ds_config_carries_the_trainers_clip():
    for clip in (4.0, 0.37, 0.0):
        assert engine.ds_config(TrainerConfig(grad_clip=clip), DeepSpeedConfig(), 1, torch.float32)[
            "gradient_clipping"] == clip


def test_matrices_decay_vectors_do_not():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3), nn.LayerNorm(3))
    decay, rest = engine.param_groups(model, 0.1)
    assert (decay["weight_decay"], rest["weight_decay"]) == (0.1, 0.0)
    assert [p.shape for p in decay["params"]] == [(10, 4), (3, 4)]
    assert [p.shape for p in rest["params"]] == [(3,), (3,), (3,)]


@pytest.mark.parametrize("layout", [
    ["deepspeed.zero_stage=0"],
    ["deepspeed=zero1"],
    ["deepspeed=zero3", "+deepspeed.extra.zero_optimization.stage3_param_persistence_threshold=0"],
], ids=["stage0", "zero1", "zero3"])
def test_adamw_updates_with_clipped_gradients_and_decays_the_matrices_only(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    squares = []  # per AdamW.step call: the sum of squares of the gradients it updates with
    groups = {}  # parameter name -> (weight decay, shape the grouping saw, the parameter's own shape)
    step, grouping = torch.optim.AdamW.step, engine.param_groups

    def spy_step(optimizer, *args, **kwargs):
        squares.append(sum(float(p.grad.double().square().sum()) for group in optimizer.param_groups
                           for p in group["params"] if p.grad is not None))
        return step(optimizer, *args, **kwargs)

    def spy_groups(model, weight_decay):
        found = grouping(model, weight_decay)
        names = {id(p): name.removeprefix("model.") for name, p in model.named_parameters()}
        for group in found:
            for p in group["params"]:
                groups[names[id(p)]] = (group["weight_decay"], tuple(getattr(p, "ds_shape", p.shape)), tuple(p.shape))
        return found

    monkeypatch.setattr(torch.optim.AdamW, "step", spy_step)
    monkeypatch.setattr(engine, "param_groups", spy_groups)
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", f"trainer.steps={STEPS}",
                 f"trainer.grad_clip={CLIP}", f"trainer.weight_decay={DECAY}", "trainer.log_every=1", "logger=none",
                 f"run_dir={tmp_path / 'run'}", *layout]) == 0

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    before = [row["grad_norm"] for row in rows if "loss" in row]
    assert len(before) == STEPS and min(before) > 10 * CLIP, before  # the premise: each update needs clipping
    assert squares and len(squares) % STEPS == 0
    calls = len(squares) // STEPS  # ZeRO steps AdamW once per parameter group or sub-group
    after = [math.sqrt(sum(squares[n * calls:(n + 1) * calls])) for n in range(STEPS)]
    assert after == pytest.approx([CLIP] * STEPS, rel=1e-4), (before, after)

    assert groups and all(shape for _, shape, _ in groups.values())
    if "deepspeed=zero3" in layout:  # the premise: a partitioned parameter's own shape says nothing
        assert {own for _, _, own in groups.values()} == {(0,)}
    decayed = {name for name, (decay, _, _) in groups.items() if decay == DECAY}
    assert decayed == {name for name in groups if not plain(name)}
    assert {decay for decay, _, _ in groups.values()} == {DECAY, 0.0}
    assert "head.out.weight" in decayed and "embed.pad" in decayed and "blocks.0.ln_attn.weight" not in decayed
