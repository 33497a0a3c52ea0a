"""The validation subset is drawn at random over the split, not its head in stored order: with a folder per source
(stored source by source) a validation of 16 samples of a 60-sample split scored the first source alone."""
from __future__ import annotations

import collections
import itertools

from megadalle.config.data import DataConfig
from megadalle.data.shards import ShardWriter
from megadalle.train.task import DataPart, held_out_batches, validation_data
from tests.dvae.conftest import png, rectangles

SOURCES = ("cc3m", "laion", "wikiart")


def split_by_source(root, per_source: int = 20):
    """A split stored source by source, one shard each, as prepare writes a folder of source folders."""
    images = rectangles(per_source * len(SOURCES), 32, 0)
    with ShardWriter(root, max_count=per_source, meta={"image_size": 32}) as writer:
        for i, image in enumerate(images):
            writer.write({"__key__": f"{i:04d}", "png": png(image), "txt": f"{SOURCES[i // per_source]} {i}"})
    return root


def subset(data: DataConfig, part: DataPart, batches: int = 1) -> list[str]:
    """The captions of the first `batches` global batches of the validation stream, as the Validator reads it."""
    stream = held_out_batches(validation_data(data), part, image_size=32)
    return [c for batch in itertools.islice(stream, batches * part.grad_accum) for c in batch["caption"]]


def test_the_validation_subset_spreads_over_the_split(tmp_path):
    split_by_source(tmp_path / "shards" / "val")
    data = DataConfig(shards=str(tmp_path / "shards"), shuffle=False, num_workers=0)  # training's order: no matter
    read = subset(data, DataPart(16, 1, 0, 1))
    assert len(read) == len(set(read)) == 16, "each sample once"
    assert set(collections.Counter(c.split()[0] for c in read)) == set(SOURCES), read
    assert subset(data, DataPart(16, 1, 0, 1)) == read, "the same subset at every validation"
    ranks = [subset(data, DataPart(4, 2, r, 2), batches=2) for r in range(2)]  # 2 ranks x 2 micro-batches of 4
    assert sorted(ranks[0] + ranks[1]) == sorted(set(ranks[0] + ranks[1])) and len(ranks[0] + ranks[1]) == 32
    for world, accum in ((2, 2), (4, 2), (4, 1)):  # the layout does not choose which samples are scored
        read_by = [subset(data, DataPart(16 // world // accum, accum, r, world)) for r in range(world)]
        assert sorted(c for captions in read_by for c in captions) == sorted(read), (world, accum)


def test_runs_of_other_seeds_validate_on_the_same_samples(tmp_path):
    """A sweep over `seed` compares val/loss: each run drew its subset with its own seed, so each scored others."""
    from megadalle.config.compose import compose
    from megadalle.train.dvae import task_from_config

    split_by_source(tmp_path / "shards" / "val")
    split_by_source(tmp_path / "shards")
    read = []
    for seed in (1, 2):
        cfg = compose("train-dvae", [f"seed={seed}", "dvae=tiny", "dvae.image_size=32",
                                     f"data.shards={tmp_path / 'shards'}", "data.num_workers=0"])
        stream = task_from_config(cfg).validation_batches(DataPart(16, 1, 0, 1))
        read.append(next(stream)["image"])
    assert read[0].equal(read[1])
