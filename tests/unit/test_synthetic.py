"""data=synthetic: random tokens at the model's shapes, a pure function of (seed, step, sample)."""
import itertools

import pytest
import torch

from megadalle.config import ConfigError, build
from megadalle.config.compose import compose
from megadalle.config.data import DataConfig
from megadalle.train.task import DataPart
from megadalle.train.transformer import task_from_config


def task(*overrides, seed=0):
    return task_from_config(compose("train", ["data=synthetic", "model=tiny", f"seed={seed}", *overrides]))


def updates(t, part: DataPart, start_step: int, count: int) -> list[list[dict]]:
    """`count` updates of micro-batches (grad_accum each) from `start_step`."""
    it = t.batches(start_step, part)
    return [list(itertools.islice(it, part.grad_accum)) for _ in range(count)]


def cat(batches: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batches]) for k in ("text", "image")}


def test_shapes_vocabularies_and_pads():
    t = task("model.text_pad_id=3")
    cfg = t.cfg
    [[batch]] = updates(t, DataPart(16, 1, 0, 1), 0, 1)
    text, image = batch["text"], batch["image"]
    assert text.shape == (16, cfg.text_len) and image.shape == (16, cfg.grid_len)
    assert text.dtype == image.dtype == torch.int64
    assert 0 <= int(text.min()) and int(text.max()) < cfg.text_vocab
    assert 0 <= int(image.min()) and int(image.max()) < cfg.image_vocab
    is_pad = text == 3
    lengths = (~is_pad).sum(1)
    assert bool((lengths >= 1).all()) and len(set(lengths.tolist())) > 1, "random caption lengths, never empty"
    assert torch.equal(is_pad, torch.arange(cfg.text_len) >= lengths[:, None]), "pads only after the caption"


def test_resume_sees_the_same_batches():
    part = DataPart(2, 2, 0, 1)
    full = updates(task(), part, 0, 4)
    resumed = updates(task(), part, 2, 2)
    for a, b in zip(full[2:], resumed):
        for x, y in zip(a, b):
            assert torch.equal(x["text"], y["text"]) and torch.equal(x["image"], y["image"])


def test_every_layout_sees_the_same_global_batch():
    t = task()
    single = cat(updates(t, DataPart(2, 4, 0, 1), 5, 1)[0])
    ranks = [updates(t, DataPart(2, 2, r, 2), 5, 1)[0] for r in range(2)]
    by_reader = {DataPart(2, 2, r, 2).reader(a): ranks[r][a] for r in range(2) for a in range(2)}
    spread = cat([by_reader[i] for i in range(4)])
    assert torch.equal(single["text"], spread["text"]) and torch.equal(single["image"], spread["image"])


def test_steps_and_seeds_differ():
    part = DataPart(2, 1, 0, 1)
    [[a], [b]] = updates(task(), part, 0, 2)
    [[c]] = updates(task(seed=1), part, 0, 1)
    assert not torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_data_identity_names_the_source():
    assert task().data_identity(DataPart(2, 2, 0, 2)) == {"source": "synthetic", "seed": 0, "global_batch": 8}


def test_shards_source_still_needs_shards():
    with pytest.raises(ConfigError, match="data.shards=None"):
        build(DataConfig, {"shards": None}, "data")
    with pytest.raises(ConfigError, match="data.source='random'"):
        build(DataConfig, {"source": "random", "shards": None}, "data")
