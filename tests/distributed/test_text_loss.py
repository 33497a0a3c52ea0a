"""The text loss of an update is the token mean of the whole update in every layout, as one plain batch gives it.

A plain-PyTorch reference runs the tiny Transformer forward and backward once over the whole global batch of 8
(update 0: captions of 0 to 15 text targets, short ones and long ones in different micro-batches) and steps the
trainer's own AdamW. One process accumulating 2 micro-batches, 2 ZeRO-2 (and ZeRO-3) ranks accumulating 2 each,
a 2-stage pipeline over 2 micro-batches and 2 such pipelines side by side (4 ranks) must log its loss, text loss
and image loss on every rank (a pipeline's first stage too: its last stage computes them) and reach its
parameters. AdamW runs with eps far above every gradient, where its first step is lr/eps times the gradient itself
(not its sign): equal parameters mean equal gradients. Averaging each micro-batch's own token mean (the old
normalisation) moved parameters by up to 0.06.
Update 1 has only empty captions: text loss 0, and the loss is the reference's at the updated weights. Validation
on update 0's global batch in between is the reference's loss of that whole batch at the updated weights.
"""
import pytest
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.config.train import TrainerConfig
from megadalle.models.transformer import Transformer
from megadalle.train import engine

import dist_launch as launch
from dist_captions import global_batch

OVERRIDES = ["model=tiny", "data=synthetic", "trainer=tiny", "logger=none", "seed=3", "trainer.warmup_steps=0",
             "trainer.decay=constant", "trainer.lr=1e6", "trainer.eps=1e6", "trainer.weight_decay=0",
             "trainer.grad_clip=0"]
LAYOUTS = {
    "single_accum2": (1, ["deepspeed=zero1", "trainer.micro_batch=4", "trainer.grad_accum=2"]),
    "zero2_2ranks_accum2": (2, ["deepspeed=zero2", "trainer.micro_batch=2", "trainer.grad_accum=2"]),
    "zero3_2ranks_accum2": (2, ["deepspeed=zero3", "trainer.micro_batch=2", "trainer.grad_accum=2"]),
    "pipe2": (2, ["deepspeed=pipe", "trainer.micro_batch=4", "trainer.grad_accum=2"]),
    "pipe2x2dp": (4, ["deepspeed=pipe", "trainer.micro_batch=2", "trainer.grad_accum=2"]),
}


@pytest.fixture(scope="module")
def reference():
    """(metrics of updates 0 and 1, validation metrics, parameters after update 0) of plain PyTorch over the whole
    global batches."""
    cfg = compose("train", OVERRIDES)
    model_cfg = build(TransformerConfig, cfg.model, "model")
    torch.manual_seed(int(cfg.seed))  # what the trainer's rng.seed_all(seed) does to torch before building
    model = Transformer(model_cfg)
    optimizer = engine.optimizer(model, build(TrainerConfig, cfg.trainer, "trainer"))
    loss, parts = model.loss(**global_batch(model_cfg, 0))
    loss.backward()
    optimizer.step()
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        metrics = [(loss, parts), model.loss(**global_batch(model_cfg, 1)), model.loss(**global_batch(model_cfg, 0))]
    metrics = [{"loss": loss.item(), **{k: float(v) for k, v in parts.items()}} for loss, parts in metrics]
    validated = {f"val/{name}": value for name, value in metrics.pop().items()}
    return metrics, validated, params


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_text_loss_is_the_token_mean_of_the_whole_update(layout, reference, tmp_path):
    world, overrides = LAYOUTS[layout]
    launch.run(world, {"overrides": [*OVERRIDES, *overrides], "out": str(tmp_path)}, tmp_path / "logs",
               script="dist_text_loss_worker.py")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    expected_metrics, expected_validated, expected_params = reference
    assert expected_metrics[1]["text_loss"] == 0.0
    pipelined = "deepspeed=pipe" in overrides
    for rank in ranks:
        for got, expected in zip([*rank["metrics"], rank["validated"]], [*expected_metrics, expected_validated]):
            if pipelined and got is rank["validated"]:  # a pipeline validates through eval_batch: the loss only
                expected = {"val/loss": expected["val/loss"]}
            assert set(expected) <= set(got), (layout, sorted(got))
            for name, value in expected.items():
                assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (layout, name, got, expected)
    trained = {name: value for rank in ranks for name, value in rank["params"].items()}
    assert sorted(trained) == sorted(expected_params)
    for name, value in trained.items():
        torch.testing.assert_close(value, expected_params[name], rtol=1e-5, atol=2e-5, msg=f"{layout}: {name}")
