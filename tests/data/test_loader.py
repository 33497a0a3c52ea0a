"""Step-indexed loaders: determinism, rank splits, exact and elastic resume, uneven shards, batch contents."""
from __future__ import annotations

import itertools

import pytest
import torch

from megadalle.config.data import DataConfig
from megadalle.data.loader import LoaderStateError, image_loader, loader_from_config, rank_and_world, token_loader
from tests.data.mixed_image_tar import mixed_image_tar

TEXT_LEN = 12


def tokens(root, tokenizer, batch=6, **kw):
    return token_loader(root, batch, tokenizer, TEXT_LEN, bpe_dropout=0.3, **kw)


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def ids_of(batch) -> list[int]:
    """Token shards store codes filled with the sample's number, so row r of `image` names its sample."""
    return batch["image"][:, 0].tolist()


def global_batches(root, tokenizer, world, steps, start=0, batch=6, **kw) -> list[set[int]]:
    """The samples of each global batch when `world` ranks each read their part from `start` on."""
    per_rank = []
    for rank in range(world):
        loader = tokens(root, tokenizer, batch, rank=rank, world_size=world, **kw)
        per_rank.append([ids_of(b) for b in itertools.islice(loader.iter_from_step(start), steps)])
    return [set().union(*(per_rank[r][s] for r in range(world))) for s in range(steps)]


def test_same_seed_same_batches_any_worker_count(token_shards, tokenizer):
    a = take(tokens(token_shards, tokenizer, seed=7, num_workers=0), 8)
    b = take(tokens(token_shards, tokenizer, seed=7, num_workers=2), 8)
    for x, y in zip(a, b):
        assert torch.equal(x["text"], y["text"]) and torch.equal(x["image"], y["image"])
    c = take(tokens(token_shards, tokenizer, seed=8), 8)
    assert [ids_of(x) for x in a] != [ids_of(x) for x in c]


def test_a_seed_as_large_as_the_clocks_reads_with_workers_too(token_shards, tokenizer):
    """`seed=$(date +%s%N)`: the workers' generator was seeded with seed * 1_000_003 + step, past what torch takes,
    and every training verb stopped at its first batch with a traceback (without workers it trained)."""
    seed = 1_765_000_000_000_000_000
    a = take(tokens(token_shards, tokenizer, seed=seed, num_workers=0), 2)
    b = take(tokens(token_shards, tokenizer, seed=seed, num_workers=2), 2)
    assert [ids_of(x) for x in a] == [ids_of(x) for x in b]


def test_every_epoch_sees_each_sample_once(token_shards, tokenizer):
    loader = tokens(token_shards, tokenizer, batch=5)  # 30 samples: 6 steps per epoch
    seen = [i for b in take(loader, 12) for i in ids_of(b)]
    assert sorted(seen[:30]) == list(range(30)) and sorted(seen[30:]) == list(range(30))
    assert seen[:30] != seen[30:]  # reshuffled per epoch
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["samples_seen"] == 60


def test_rank_splits_are_disjoint_and_complete(token_shards, tokenizer):
    world, batch = 3, 6
    loaders = [tokens(token_shards, tokenizer, batch, rank=r, world_size=world) for r in range(world)]
    parts = [[ids_of(b) for b in take(loader, 5)] for loader in loaders]  # 30 samples = 5 steps = one epoch
    for step in range(5):
        step_ids = [i for r in range(world) for i in parts[r][step]]
        assert len(step_ids) == len(set(step_ids)) == batch
        assert sorted(step_ids) == sorted(loaders[0].sample_ids(step).tolist() + loaders[1].sample_ids(step).tolist()
                                          + loaders[2].sample_ids(step).tolist())
    everything = [i for r in range(world) for step in parts[r] for i in step]
    assert sorted(everything) == list(range(30))


def test_resume_mid_epoch_equals_never_stopping(token_shards, tokenizer):
    straight = take(tokens(token_shards, tokenizer, num_workers=2), 9)
    first = tokens(token_shards, tokenizer, num_workers=2)
    before = take(first, 4)
    state = first.state_dict()
    assert state["step"] == 4 and state == tokens(token_shards, tokenizer).state_at(4)
    resumed = tokens(token_shards, tokenizer, num_workers=2)
    resumed.load_state_dict(state)
    after = take(resumed, 5)
    for x, y in zip(straight, before + after):  # text too: BPE dropout is seeded by position
        assert torch.equal(x["text"], y["text"]) and torch.equal(x["image"], y["image"])


@pytest.mark.parametrize("before_world, after_world, window", [(2, 1, None), (1, 2, None), (2, 3, None), (2, 1, 8)])
def test_elastic_resume_keeps_global_batches(token_shards, tokenizer, before_world, after_world, window):
    reference = global_batches(token_shards, tokenizer, before_world, steps=8, shuffle_window=window)
    stopped = tokens(token_shards, tokenizer, rank=0, world_size=before_world, shuffle_window=window)
    take(stopped, 3)
    state = stopped.state_dict()
    resumed = []
    for rank in range(after_world):
        loader = tokens(token_shards, tokenizer, rank=rank, world_size=after_world, shuffle_window=window)
        loader.load_state_dict(state)
        resumed.append([ids_of(b) for b in take(loader, 5)])
    after = [set().union(*(resumed[r][s] for r in range(after_world))) for s in range(5)]
    assert after == reference[3:]
    assert all(len(s) == 6 for s in after)


def test_uneven_shards_more_ranks_times_workers_than_shards(image_shards):
    """4 shards of 7, 3, 9, 4 samples; 3 ranks x 2 workers: every rank gets a full part every step."""
    world = 3
    got = []
    for rank in range(world):
        loader = image_loader(image_shards, 6, 16, rank=rank, world_size=world, num_workers=2)
        got.append([b["key"] for b in take(loader, 8)])
        assert all(len(keys) == 2 for keys in got[-1])
    first_epoch = [k for step in range(4) for r in range(world) for k in got[r][step]][:23]
    assert sorted(first_epoch) == [f"{i:06d}" for i in range(23)]


def test_single_shard_many_ranks(tmp_path):
    from tests.data.conftest import jpeg_bytes, write_counts

    root = write_counts(tmp_path, [5], lambda i: {"__key__": f"{i:03d}", "jpg": jpeg_bytes((8, 8), i), "txt": "x"})
    for rank in range(4):
        batches = take(image_loader(root, 8, 8, rank=rank, world_size=4, num_workers=2), 3)
        assert [len(b["key"]) for b in batches] == [2, 2, 2]


def test_finite_epochs_with_partial_last_batch(image_shards):
    """23 samples, global batch 10 on 5 ranks, one epoch: the last step has 3 samples, so ranks 3 and 4
    have nothing left and stop one step early; together the ranks read each sample exactly once."""
    counts, keys = [], []
    for rank in range(5):
        batches = list(image_loader(image_shards, 10, 16, rank=rank, world_size=5, epochs=1, shuffle=False))
        counts.append(len(batches))
        keys += [k for b in batches for k in b["key"]]
    assert counts == [3, 3, 3, 2, 2]
    assert sorted(keys) == [f"{i:06d}" for i in range(23)]


def test_image_batches(image_shards):
    batch = take(image_loader(image_shards, 4, 8, seed=1), 1)[0]
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert all(isinstance(c, str) and "\n" not in c and c for c in batch["caption"])
    assert all(c in t.splitlines() and t.count("\n") == 1 for c, t in zip(batch["caption"], batch["txt"]))


def test_token_batches_match_the_planned_ids(token_shards, tokenizer):
    loader = tokens(token_shards, tokenizer, batch=4, rank=1, world_size=2)
    batch = next(iter(loader.iter_from_step(5)))
    assert batch["text"].shape == (2, TEXT_LEN) and batch["text"].dtype == torch.long
    assert batch["image"].shape == (2, 16) and batch["image"].dtype == torch.long
    assert ids_of(batch) == loader.sample_ids(5).tolist()
    assert loader.step == 6


def test_state_must_match_the_data(token_shards, image_shards, tokenizer):
    state = tokens(token_shards, tokenizer).state_dict()
    with pytest.raises(LoaderStateError, match="fingerprint"):
        image_loader(image_shards, 6, 16).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="global_batch"):
        tokens(token_shards, tokenizer, batch=12).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="seed"):
        tokens(token_shards, tokenizer, seed=3).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="shuffle_window"):
        tokens(token_shards, tokenizer, shuffle_window=10).load_state_dict(state)


def test_bad_arguments(token_shards, tokenizer):
    with pytest.raises(ValueError, match="multiple of world_size"):
        tokens(token_shards, tokenizer, batch=5, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank=2"):
        tokens(token_shards, tokenizer, rank=2, world_size=2)


def test_rank_from_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert rank_and_world() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_and_world() == (1, 2)


def test_loader_from_config(token_shards, image_shards, tokenizer, tmp_path):
    path = tmp_path / "tok.model"
    path.write_bytes(tokenizer.proto)
    tok = loader_from_config(DataConfig(shards=str(token_shards), tokenizer=str(path), num_workers=0), 4, seed=0,
                             text_len=TEXT_LEN, rank=0, world_size=1)
    assert take(tok, 1)[0]["text"].shape == (4, TEXT_LEN)
    img = loader_from_config(DataConfig(shards=str(image_shards), num_workers=0), 4, seed=0, image_size=8,
                             rank=0, world_size=1)
    assert take(img, 1)[0]["image"].shape == (4, 3, 8, 8)


def test_a_loader_given_the_runs_index_reads_it_without_opening_the_folder_again(image_shards, monkeypatch):
    """A training run checks its data identity on the index it opened (`ShardsTask.shard_index`): a loader that opened
    the folder again could find it changed and index it again, reading other data than the ranks agreed on."""
    from megadalle.data import loader
    from megadalle.data.shards import open_index

    index = open_index(image_shards)

    def refused(*args, **kwargs):
        raise AssertionError("the folder was opened again")

    monkeypatch.setattr(loader, "open_index", refused)
    img = loader_from_config(DataConfig(shards=str(image_shards), num_workers=0), 4, seed=0, image_size=8,
                             index=index, rank=0, world_size=1)
    assert img.index is index and take(img, 1)[0]["image"].shape == (4, 3, 8, 8)


def test_accumulation_reads_what_more_ranks_would(token_shards, tokenizer):
    """Reader a * world + rank: 1 rank x 2 micro-batches == 2 ranks x 1 (megadalle.train.task.DataPart)."""
    one = [ids_of(b) for b in take(tokens(token_shards, tokenizer, 6, rank=0, world_size=1, grad_accum=2), 8)]
    two = [[ids_of(b) for b in take(tokens(token_shards, tokenizer, 6, rank=r, world_size=2), 4)] for r in range(2)]
    assert one == [two[r][s] for s in range(4) for r in range(2)]
    assert all(len(m) == 3 for m in one)


def test_two_ranks_two_micro_batches_read_the_documented_positions(token_shards, tokenizer):
    """2 ranks x 2 accumulation steps cut global batch 8 into 4 strided micro-batches; accumulation step a of rank r
    reads micro-batch a * 2 + r (the loader's docstring, DataPart.reader, which the synthetic source reads by), not
    r * 2 + a: both cover the global batch, but only the first is the layout the two sources and the docs share.
    Unshuffled, the ids are the positions, so the table below is step 1's positions 8..15, written out."""
    from megadalle.data.order import reader_positions
    from megadalle.train.task import DataPart

    expected = {(0, 0): [8, 12], (1, 0): [9, 13], (0, 1): [10, 14], (1, 1): [11, 15]}
    for rank in range(2):
        loader = tokens(token_shards, tokenizer, 8, rank=rank, world_size=2, grad_accum=2, shuffle=False)
        read = [ids_of(b) for b in take(loader.iter_from_step(1), 2)]
        part = DataPart(micro_batch=2, grad_accum=2, dp_rank=rank, dp_world=2)
        for accum in range(2):
            assert read[accum] == expected[rank, accum], (rank, accum)
            assert reader_positions(1, 8, part.reader(accum), part.readers).tolist() == expected[rank, accum]


def test_step_advances_after_the_last_micro_batch(token_shards, tokenizer):
    loader = tokens(token_shards, tokenizer, 6, rank=0, world_size=1, grad_accum=3, num_workers=2)
    stream = loader.iter_from_step(2)
    next(stream)
    assert loader.step == 2
    next(stream), next(stream)
    assert loader.step == 3 and loader.state_dict()["samples_seen"] == 18


def test_elastic_resume_with_accumulation(token_shards, tokenizer):
    """2 ranks x 2 micro-batches, then 1 rank x 4 (same global batch 8): same samples per global batch."""
    def sets(world, accum, start, steps):
        per = [[ids_of(b) for b in take(tokens(token_shards, tokenizer, 8, rank=r, world_size=world,
                                               grad_accum=accum).iter_from_step(start), steps * accum)]
               for r in range(world)]
        return [set().union(*(per[r][s * accum + a] for r in range(world) for a in range(accum))) for s in range(steps)]

    assert sets(2, 2, 0, 6) == sets(2, 2, 0, 2) + sets(1, 4, 2, 4)


def test_a_corrupt_sample_names_itself(tmp_path):
    from tests.data.conftest import jpeg_bytes, write_counts

    root = write_counts(tmp_path, [4], lambda i: {"__key__": f"{i:03d}", "txt": "x",
                                                  "jpg": b"broken" if i == 2 else jpeg_bytes((8, 8), i)})
    with pytest.raises(RuntimeError, match=r"shard-000000\.tar:002: step 0, micro-batch 0: its image does not decode"):
        take(image_loader(root, 4, 8, shuffle=False), 1)


def test_samples_with_different_image_fields_all_load(tmp_path):
    """Each sample's image is whichever image field it has: a folder mixing jpg, png, webp, gif and tif trains."""
    root = mixed_image_tar(tmp_path / "wds")
    batch = take(image_loader(root, 6, 8, shuffle=False), 1)[0]
    assert batch["image"].shape == (6, 3, 8, 8)
    assert batch["key"] == [f"sub/dir/k{i}" for i in range(6)]
    assert abs(float(batch["image"][4, 0].mean()) - 160 / 255) < 0.05  # k4's own colour (a tif), not another's


def test_a_corrupt_sample_names_its_own_shard_when_another_shard_holds_its_key(tmp_path):
    """Keys are unique only within a shard: the sample is found by its place in the batch, not by its key."""
    from tests.data.conftest import jpeg_bytes, write_counts

    root = write_counts(tmp_path, [3, 3], lambda i: {"__key__": f"{i % 3:03d}", "txt": "x",
                                                     "jpg": b"broken" if i == 5 else jpeg_bytes((8, 8), i)})
    with pytest.raises(RuntimeError, match=r"shard-000001\.tar:002: step 0, micro-batch 0: its image does not decode"):
        take(image_loader(root, 6, 8, shuffle=False), 1)


def test_batches_name_their_samples_and_so_the_copies_a_straddling_batch_holds(image_shards):
    """`sample` is each row's global id: a global batch straddling an epoch boundary may read a sample twice (CLIP's
    loss leaves the copy out of the contrast by it), where keys repeat only by chance across shards."""
    loader = image_loader(image_shards, 10, 16, seed=0)
    batches = take(loader, 12)
    assert all(b["sample"].tolist() == loader.sample_ids(step).tolist() for step, b in enumerate(batches))
    assert all(b["key"] == [f"{i:06d}" for i in b["sample"].tolist()] for b in batches)  # keys 0..22 in id order
    assert any(len(set(b["sample"].tolist())) < 10 for b in batches)
