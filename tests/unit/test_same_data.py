"""Every rank of a run trains on the data rank 0 reads, or all stop with one line."""
from types import SimpleNamespace

import numpy as np
import pytest
import webdataset as wds

from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.config.data import DataConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.data import loader
from megadalle.data.fields import encode_field
from megadalle.data.shards import ShardIndex, index_directory, open_index
from megadalle.train import distributed
from megadalle.train.clip import ClipTask
from megadalle.train.data_identity import DataDisagreement, check_same_data
from megadalle.train.dvae import DVAETask
from megadalle.train.task import DataPart
from megadalle.train.transformer import TransformerTask, task_from_config

IDENTITY = {"fingerprint": "abc", "seed": 0, "global_batch": 8}


def test_ranks_reading_the_same_data_go_on(monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: dict(IDENTITY))
    check_same_data(dict(IDENTITY))


def test_a_rank_reading_other_data_than_rank_0_stops_the_run(monkeypatch):
    """Each rank opens the index itself: a shard folder that changed while the run started was indexed again
    between two ranks' opens, and they trained on different data sets, each believing its own."""
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: dict(IDENTITY))
    with pytest.raises(DataDisagreement, match=r"reads other data than rank 0 \(fingerprint: not the same\): the "
                                               r"shards changed while the run started"):
        check_same_data({**IDENTITY, "fingerprint": "abd"})


def _token_tar(root, name, keys):
    """Token shards written elsewhere (`megadalle index` takes codes.npy for the media)."""
    with wds.TarWriter(str(root / name)) as sink:
        for n, key in enumerate(keys):
            sink.write({"__key__": key, "codes.npy": encode_field("codes.npy", np.full((2, 2), n, np.uint16)),
                        "txt": f"caption {key}"})


@pytest.fixture
def downloading(tmp_path):
    """Two indexed tars of a folder that is still growing."""
    root = tmp_path / "tokens"
    root.mkdir()
    for shard in range(2):
        _token_tar(root, f"{shard:05d}.tar", [f"{shard}_{i}" for i in range(3)])
    index_directory(root, ["txt"], True)
    return root


def _transformer(root):
    cfg = task_from_config(compose("train", ["data=synthetic", "model=tiny"])).cfg
    return TransformerTask(cfg, DataConfig(shards=str(root), tokenizer="never-read.model", num_workers=0))


def _dvae(root):
    return DVAETask(DVAEConfig(image_size=16), DataConfig(shards=str(root), num_workers=0))


def _clip(root):
    return ClipTask(ClipConfig(), DataConfig(shards=str(root), num_workers=0), "never-read.model")


@pytest.fixture
def loaders(monkeypatch):
    """The index each loader a task builds reads (the loader itself is not built: it would need a tokenizer)."""
    built = []

    def record(cfg, *args, index=None, **kwargs):
        built.append(index if index is not None else loader.open_index(cfg.shards, "data.shards"))
        return SimpleNamespace(iter_from_step=lambda step: iter(()))

    monkeypatch.setattr(loader, "loader_from_config", record)
    return built


PART = DataPart(2, 1, 0, 1)


@pytest.mark.parametrize("make", [_transformer, _dvae])
def test_the_loaders_read_the_data_set_whose_identity_the_ranks_compared(downloading, loaders, make):
    """Ranks compared index.json's fingerprint (the dVAE's and CLIP's data none), then each loader opened the
    folder again: one that had grown meanwhile was indexed again there, so ranks that agreed read other data sets
    (and the checkpoints named one that no rank read)."""
    task = make(downloading)
    identity = task.data_identity(PART)
    _token_tar(downloading, "00002.tar", ["2_0"])  # img2dataset goes on while the run starts
    list(task.batches(0, PART))
    assert [index.fingerprint for index in loaders] == [identity["fingerprint"]]


@pytest.mark.parametrize("make", [_transformer, _dvae, _clip])
def test_the_identity_is_that_of_the_folder_the_run_reads(downloading, make):
    """A folder changed since its index was written: the identity (compared with a checkpoint's on resume) was
    taken from the stale index.json, and the loaders then read the folder indexed again."""
    _token_tar(downloading, "00002.tar", ["2_0"])
    identity = make(downloading).data_identity(PART)
    assert identity["fingerprint"] == open_index(downloading).fingerprint == ShardIndex.load(downloading).fingerprint
    assert ShardIndex.load(downloading).total == 7
