"""Every key README's "Rerunning resumes" section says a rerun may change resumes the run directory, one key at a
time, and a few that change the training are still refused: the list itself is pinned, not one example of it.
`trainer.micro_batch` / `grad_accum` may change together at the same global batch, except in a CLIP run whose losses
contrast each micro-batch (`clip.negatives=micro_batch`), where another micro_batch is another objective."""
from __future__ import annotations

import json

import pytest

from megadalle.train import rundir

DOCUMENTED = [  # README "Rerunning resumes": (key, value in run.json, value of the rerun)
    ("trainer.steps", 10, 50),
    ("trainer.decay_steps", None, 40),
    ("data.shards", "/data/shards", "/local/shards"),
    ("trainer.log_every", 10, 1),
    ("trainer.checkpoint_every", 100, 50),
    ("trainer.keep_checkpoints", 2, 5),
    ("trainer.media_every", 0, 500),
    ("trainer.eval_every", 0, 100),
    ("trainer.eval_batches", 16, 4),
    ("data.val_shards", None, "/data/val"),
    ("dvae_weights", None, "/runs/dvae/dvae.safetensors"),
    ("media_captions", None, "captions.txt"),
    ("media_samples", 4, 8),
    ("preview", 8, 4),
    ("usage_window", 1000, 100),
    ("weights", None, "/exports/clip.safetensors"),
    ("logger.mode", "online", "offline"),
    ("logger.project", "megadalle", "other"),
    ("data.num_workers", 4, 0),
    ("data.prefetch_factor", 2, 8),
    ("model.activation_checkpointing", False, True),
    ("model.attention_backend", "reference", "triton"),
    ("deepspeed.overlap_comm", True, False),
    ("deepspeed.reduce_bucket_size", 5e8, 2e8),
    ("deepspeed.timeout_minutes", 30.0, 240.0),
    ("deepspeed.zero3_window_blocks", 2.0, 4.0),
    ("trainer.keep_freed_memory", True, False),
    ("trainer.fused_optimizer", True, False),
    ("run_dir", None, "/runs/a"),
    ("out_dir", "outputs", "/scratch/outputs"),
    ("name", "default", "exp1"),
    ("resume", "auto", "/runs/a/checkpoints/step_00000010"),
    ("new_data", False, True),  # README: "unless the rerun adds new_data=true"
]
"""`trainer.micro_batch` / `grad_accum`, the other documented pair, change together: test_*_global_batch below."""

REFUSED = [("seed", 0, 1), ("trainer.lr", 1e-3, 3e-4), ("model.d_model", 64, 128), ("data.shuffle", True, False),
           ("model.attention_pattern", ["row"], ["column"])]


def run_config(**changed) -> dict:
    """A Transformer run's nested config (no `clip` group), with dotted `changed` keys set."""
    config = {"seed": 0, "name": "default", "run_dir": None, "out_dir": "outputs", "resume": "auto",
              "new_data": False,
              "trainer": {"steps": 10, "lr": 1e-3, "micro_batch": 4, "grad_accum": 1, "precision": "bf16",
                          "log_every": 10},
              "model": {"d_model": 64, "attention_pattern": ["row"], "attention_backend": "reference"},
              "data": {"source": "shards", "shards": "/data/shards", "shuffle": True, "num_workers": 4},
              "deepspeed": {"zero_stage": 1}, "logger": {"mode": "online"}}
    for dotted, value in changed.items():
        *groups, leaf = dotted.split(".")
        node = config
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return config


def saved_run(tmp_path, config: dict):
    """A run directory whose run.json records `config`, that began to save a checkpoint (one that saved none is
    refused otherwise: test_rerun.py)."""
    (tmp_path / "checkpoints" / "step_00000001").mkdir(parents=True)
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps({"config": config}))
    return tmp_path


@pytest.mark.parametrize("key, there, now", DOCUMENTED, ids=[key for key, _, _ in DOCUMENTED])
def test_a_documented_key_may_change_at_a_rerun(key, there, now):
    assert rundir.config_diff(run_config(**{key: there}), run_config(**{key: now})) == []


@pytest.mark.parametrize("key, there, now", REFUSED, ids=[key for key, _, _ in REFUSED])
def test_a_key_that_changes_the_training_is_still_refused(key, there, now):
    assert rundir.config_diff(run_config(**{key: there}), run_config(**{key: now})) == [(key, there, now)]


def test_every_resumable_key_is_one_readme_documents():
    """A key made resumable without a word in README would let a rerun change it unannounced; `logger.*` stands for
    the logger group, the documented `logger.mode`/`project`."""
    documented = {key for key, _, _ in DOCUMENTED} | {"trainer.grad_accum", "logger.*"}
    assert set(rundir.RESUMABLE) <= documented


@pytest.mark.parametrize("clip", [None, {"negatives": "update"}], ids=["no clip", "clip negatives=update"])
def test_micro_batch_and_grad_accum_may_trade_at_the_same_global_batch(tmp_path, clip):
    """4 x 1 resumed as 2 x 2: the same 4 samples per update, only the memory differs (the checkpoint's data identity
    refuses another global batch)."""
    extra = {} if clip is None else {"clip": clip}
    there = {**run_config(), **extra}
    now = {**run_config(**{"trainer.micro_batch": 2, "trainer.grad_accum": 2}), **extra}
    assert rundir.config_diff(there, now) == []
    rundir.check_config(saved_run(tmp_path, there), now)


def test_a_clip_run_contrasting_each_micro_batch_refuses_another_micro_batch(tmp_path):
    """Its loss contrasts micro_batch x ranks pairs: 4 x 1 resumed as 2 x 2 contrasts half of them."""
    there = {**run_config(), "clip": {"negatives": "micro_batch"}}
    now = {**run_config(**{"trainer.micro_batch": 2, "trainer.grad_accum": 2}), "clip": {"negatives": "micro_batch"}}
    assert rundir.config_diff(there, now) == [("trainer.micro_batch", 4, 2)]
    with pytest.raises(rundir.RunDirError, match=r"clip.negatives=micro_batch.*trainer.micro_batch=2 \(there 4\) "
                                                 r"would contrast 2 x ranks pairs instead of 4 x ranks"):
        rundir.check_config(saved_run(tmp_path, there), now)
