"""`train-clip` runs through the generic trainer on real shards and exports loadable weights."""
import json

import pytest
import torch

from megadalle.models.clip import contrastive_loss
from megadalle.sampling.load import load_model
from megadalle.train.clip import train_clip
from tests.sample.clip_run import clip_config


def test_train_clip_trains_and_exports_loadable_weights(tmp_path):
    path = train_clip(clip_config(tmp_path))
    clip = load_model(path, "clip")
    assert clip.cfg.text_len == 10 and torch.isfinite(clip.logit_scale).all()
    assert load_model(tmp_path / "run", "clip").state_dict()["logit_scale"].equal(clip.state_dict()["logit_scale"])
    half = load_model(tmp_path / "run", "clip", dtype=torch.bfloat16).state_dict()  # read as bf16, not widened
    assert all(half[name].dtype == torch.bfloat16 and half[name].equal(t.bfloat16())
               for name, t in clip.state_dict().items())


def test_zero3_validates_and_the_exported_weights_are_the_ema(tmp_path):
    """Under ZeRO-3 the validation loss (run outside DeepSpeed's engine) read an empty logit_scale; with
    trainer.ema the verb exported the raw weights as clip.safetensors. Accumulating, the updates run through
    gradient caching (train/grad_cache.py) beside validation and the EMA."""
    partitioned = "++deepspeed.extra.zero_optimization.stage3_param_persistence_threshold=0"
    cfg = clip_config(tmp_path, "deepspeed=zero3", partitioned, "trainer.eval_every=6", "trainer.eval_batches=2",
                      "trainer.ema=0.9", "trainer.micro_batch=4", "trainer.grad_accum=2", val_fraction=0.25)
    path = train_clip(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in r for r in records)
    exported = load_model(path, "clip").state_dict()
    ema = load_model(tmp_path / "run", "clip", ema=True).state_dict()
    raw = load_model(tmp_path / "run", "clip", ema=False).state_dict()
    assert all(exported[name].equal(t) for name, t in ema.items())
    assert any(not exported[name].equal(t) for name, t in raw.items())


def test_train_clip_counts_the_images_it_upscales(tmp_path):
    """Images below CLIP's input are enlarged without an error (the checks before a run refuse a prepared set that
    says so, not tars from elsewhere of mixed sizes): every update logs their share, images_upscaled."""
    train_clip(clip_config(tmp_path, "clip.image_size=32", "trainer.steps=2", "trainer.log_every=1"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_upscaled"] for r in records] == [1.0, 1.0]


def test_with_an_ema_the_console_names_only_what_the_run_scores(tmp_path, capsys):
    """CLIP draws no media: the EMA line said "val/ metrics and media" for a run that logs none."""
    train_clip(clip_config(tmp_path, "trainer.steps=2", "trainer.ema=0.5", "trainer.media_every=1",
                           "trainer.eval_every=1", "trainer.micro_batch=8", val_fraction=0.25))
    assert "[train-clip] val/ metrics are of the EMA weights (trainer.ema=0.5), those export ships" in capsys.readouterr().out


@pytest.mark.parametrize("layout", [["trainer.micro_batch=12"],
                                    ["trainer.micro_batch=6", "trainer.grad_accum=2", "clip.negatives=update"]])
def test_a_batch_across_an_epoch_reaches_the_loss_with_its_sample_ids(tmp_path, monkeypatch, layout):
    """The loss leaves a sample's repeat out only where it is given the loader's sample ids: 32 samples in global
    batches of 12 put the epoch's end inside the third update, whose ids then name a sample twice (one micro-batch,
    and through gradient caching the update's)."""
    from megadalle.models import clip as clip_model
    from megadalle.train import clip as clip_task

    seen = []

    def spy(img, txt, scale, text=None, sample=None):
        seen.append(sample)
        return contrastive_loss(img, txt, scale, text, sample)

    monkeypatch.setattr(clip_model, "contrastive_loss", spy)
    monkeypatch.setattr(clip_task, "contrastive_loss", spy)
    train_clip(clip_config(tmp_path, "trainer.steps=3", *layout))
    assert seen and all(sample is not None and len(sample) == 12 for sample in seen)
    assert any(len(set(sample.tolist())) < len(sample) for sample in seen)
