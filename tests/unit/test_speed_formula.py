"""Throughput and MFU, number by number, against the arithmetic done by hand.

samples/s is the global batch over the update's seconds, tokens/s that times the tokens of a sample, and MFU (PaLM
appendix B) the model's training FLOPs per second over the peak of ALL the devices. These are the headline numbers of
metrics.jsonl, the console line, wandb and the benchmarks, and no test read them: the peak of one device for the whole
run (an 8-GPU node reporting 8x its MFU), tokens per update logged as tokens per second, and samples/s that forgot the
global batch all passed. The expected values below are hand arithmetic, never the code's constants; devices > 1 and
an update of other than one second keep each factor visible.
"""
import json

import pytest

from megadalle.cli import main
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.flops import transformer_flops_per_token
from megadalle.train.speed import Speed


@pytest.mark.parametrize("global_batch,tokens,flops,peak_tflops,devices,seconds,expected", [
    # 8 samples in 2 s = 4/s, 40 tokens/s; 3e12 FLOPs x 4/s over 4 devices x 100e12 FLOP/s
    (8, 10, 3e12, 100, 4, 2.0, dict(samples_per_s=4.0, tokens_per_s=40.0, mfu=12e12 / 400e12)),
    # 48 samples in 0.75 s = 64/s, 64 x 1280 tokens/s; 2.5e11 x 64 / (8 x 989e12)
    (48, 1280, 2.5e11, 989, 8, 0.75, dict(samples_per_s=64.0, tokens_per_s=81920.0, mfu=1.6e13 / 7.912e15)),
])
def test_rates_and_mfu_by_hand(global_batch, tokens, flops, peak_tflops, devices, seconds, expected):
    metrics = {"step_seconds": seconds}
    Speed(global_batch, tokens, flops, peak_tflops, devices).step(0, metrics)
    assert {name: metrics[name] for name in expected} == pytest.approx(expected, rel=1e-12)


def test_a_task_without_tokens_or_flops_logs_samples_per_second_alone():
    """A task whose `tokens_per_sample` / `flops_per_sample` is None (train/task.py) logs no made-up rate."""
    metrics = {"step_seconds": 0.5}
    Speed(6, None, None, 989, 2).step(0, metrics)
    assert metrics["samples_per_s"] == pytest.approx(12.0) and "tokens_per_s" not in metrics and "mfu" not in metrics


def test_a_training_run_logs_the_rates_of_its_global_batch(tmp_path, monkeypatch):
    """The wiring, on a tiny single-process run: the global batch is micro_batch x grad_accum (3 x 2 = 6), a sample
    is the model's 16 text + 8 x 8 image tokens, and the peak is logger.peak_tflops of the one device. The FLOPs per
    token come from flops.py, which tests/unit/test_flops_by_hand.py pins against a hand sum."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.warmup_steps=1",
                 "trainer.micro_batch=3", "trainer.grad_accum=2", "trainer.log_every=1", "logger=none",
                 "logger.peak_tflops=0.5", f"run_dir={tmp_path / 'run'}"]) == 0
    cfg = build(TransformerConfig, compose("train", ["model=tiny"]).model, "model")
    assert cfg.seq_len == 16 + 8 * 8
    flops_per_sample = transformer_flops_per_token(cfg) * 80
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "step_seconds" in row]
    assert len(rows) == 2
    for row in rows:
        samples_per_s = 6 / row["step_seconds"]
        assert row["samples_per_s"] == pytest.approx(samples_per_s, rel=1e-9)
        assert row["tokens_per_s"] == pytest.approx(samples_per_s * 80, rel=1e-9)
        assert row["mfu"] == pytest.approx(flops_per_sample * samples_per_s / 0.5e12, rel=1e-9)
