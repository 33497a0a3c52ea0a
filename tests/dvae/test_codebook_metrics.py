"""The codebook metrics (`perplexity`, `dead_codes`) describe each whole update, whatever its cut into micro-batches,
and `dead_codes` carries over a resume."""
import json
from pathlib import Path

import pytest
import torch

from megadalle.config.compose import compose
from megadalle.models.dvae_loss import codebook_perplexity, histogram_perplexity
from megadalle.train.dvae import task_from_config, train_dvae
from tests.rewound_run import rewound_copy

from .conftest import rectangles


def test_a_uniform_codebook_reads_its_size_over_the_update_not_over_a_micro_batch():
    codes = torch.randint(0, 8192, (64, 32, 32), generator=torch.Generator().manual_seed(0))
    assert codebook_perplexity(codes, 8192) == histogram_perplexity(torch.bincount(codes.flatten(), minlength=8192))
    assert codebook_perplexity(codes, 8192) > 7500 > 5000 > codebook_perplexity(codes[:8], 8192)


def test_the_update_metrics_are_those_of_all_its_micro_batches_codes(image_shards):
    task = task_from_config(compose("train-dvae", [f"data.shards={image_shards}", "dvae=tiny", "usage_window=1"]))
    model = task.build_model()
    images = rectangles(8, 32, seed=3)
    for half in (images[:4], images[4:]):
        task.loss(model, {"image": half}, step=0)
    metrics = task.after_update(model, editor=None, step=0)
    with torch.no_grad():
        codes = model.encode(images)
    assert metrics["perplexity"] == pytest.approx(codebook_perplexity(codes, task.cfg.vocab_size), rel=1e-12)
    assert metrics["dead_codes"] == 0  # every code counts as seen at the first update
    task.loss(model, {"image": images[:1]}, step=1)
    alive = codes[:1].unique().numel()
    assert task.after_update(model, editor=None, step=1)["dead_codes"] == task.cfg.vocab_size - alive


def train(tmp_path: Path, image_shards, name: str, *overrides: str) -> dict[int, dict]:
    """The metrics of a tiny `train-dvae` run, by step (fp32 on the CPU, one process)."""
    train_dvae(compose("train-dvae", [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
                                      "trainer.lr=3e-3", "trainer.ema=null", "trainer.log_every=1", "logger=none",
                                      "deepspeed.zero_stage=0", f"run_dir={tmp_path / name}", *overrides]))
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records}


def test_perplexity_does_not_depend_on_how_the_update_is_cut_into_micro_batches(tmp_path, image_shards):
    """The first update's codes come from the same initial weights and images: 4 x 2 and 8 x 1 read the same; so
    does the validation subset's (one global batch of 8 images, scored after that update: a learning rate of 1e-12
    leaves the weights, hence the argmax codes, as they were, where the two cuts' updates would differ)."""
    val = [f"data.val_shards={image_shards}", "trainer.eval_every=1", "trainer.eval_batches=1", "trainer.lr=1e-12",
           "trainer.min_lr=0"]
    whole = train(tmp_path, image_shards, "whole", "trainer.steps=1", "trainer.micro_batch=8", "trainer.grad_accum=1",
                  *val)
    cut = train(tmp_path, image_shards, "cut", "trainer.steps=1", "trainer.micro_batch=4", "trainer.grad_accum=2", *val)
    assert cut[0]["perplexity"] == pytest.approx(whole[0]["perplexity"], rel=1e-9)
    assert cut[0]["val/perplexity"] == pytest.approx(whole[0]["val/perplexity"], rel=1e-9)
    assert {"val/loss", "val/nll", "val/kl"} <= set(cut[0]) and not {"val/tau", "val/beta"} & set(cut[0])  # schedules


def test_dead_codes_after_a_resume_are_those_of_the_uninterrupted_run(tmp_path, image_shards):
    """Killed after its step-4 checkpoint, the run resumes with each code's last use: the codes unused since before
    the checkpoint are still dead in the updates after it (the record used to start afresh, every code alive)."""
    overrides = ["trainer.steps=8", "trainer.micro_batch=4", "trainer.checkpoint_every=2", "usage_window=2"]
    whole = train(tmp_path, image_shards, "a", *overrides)
    assert any(whole[s]["dead_codes"] for s in (4, 5)), "codes must die before the resume, or the test proves nothing"
    rewound_copy(tmp_path / "a", tmp_path / "b", step=4)
    again = train(tmp_path, image_shards, "b", *overrides)
    assert sorted(again) == [4, 5, 6, 7]
    assert [again[s]["dead_codes"] for s in again] == [whole[s]["dead_codes"] for s in again]
    assert [again[s]["perplexity"] for s in again] == pytest.approx([whole[s]["perplexity"] for s in again])
