"""`data.shuffle` and `data.shuffle_window` are part of the data identity a checkpoint records: step N of shard order
is not step N of a seeded permutation, nor of one windowed otherwise. A run that resumes ANOTHER run's checkpoint (`resume=<other>/checkpoints/step_N` into a new
run directory) has no run.json to compare, so the identity is the only guard there: with shuffle flipped it is
refused, new_data=true included (new_data lets the data itself differ, never its order's shuffling)."""
from __future__ import annotations

import numpy as np
import pytest

from megadalle.config.data import DataConfig
from megadalle.config.dvae import DVAEConfig
from megadalle.data.shards import ShardWriter
from megadalle.train.checkpoint import CheckpointError
from megadalle.train.data_identity import check_data_identity
from megadalle.train.dvae import DVAETask
from megadalle.train.task import DataPart

PART = DataPart(micro_batch=2, grad_accum=1, dp_rank=0, dp_world=1)


def identity(folder, **data) -> dict:
    """The identity of a run on the shard folder `folder` with the data settings `data`."""
    return DVAETask(DVAEConfig(image_size=16), DataConfig(shards=str(folder), num_workers=0, **data)).data_identity(PART)


@pytest.fixture
def shards(tmp_path):
    """A 6-sample shard folder."""
    with ShardWriter(tmp_path / "shards") as writer:
        for n in range(6):
            writer.write({"__key__": f"s{n}", "codes.npy": np.full((2, 2), n, np.uint16), "txt": f"caption {n}"})
    return tmp_path / "shards"


@pytest.fixture
def identities(shards):
    """{shuffle: the identity of a run on one 6-sample shard folder with data.shuffle=shuffle}, all else equal."""
    return {shuffle: identity(shards, shuffle=shuffle) for shuffle in (True, False)}


def test_the_identity_records_whether_the_data_is_shuffled(identities):
    assert identities[True]["shuffle"] is True and identities[False]["shuffle"] is False
    assert {**identities[False], "shuffle": True} == identities[True]  # nothing else differs


@pytest.mark.parametrize("new_data", [False, True])
@pytest.mark.parametrize("saved, now", [(True, False), (False, True)])
def test_a_resume_with_shuffle_flipped_is_refused(identities, saved, now, new_data):
    with pytest.raises(CheckpointError, match=rf"cannot resume /other/checkpoints/step_00000002: it was trained with "
                                              rf"data shuffle={saved}, this run has shuffle={now}"):
        check_data_identity(identities[saved], identities[now], "/other/checkpoints/step_00000002", new_data)


def test_a_resume_with_the_same_shuffle_goes_on(identities):
    for shuffle in (True, False):
        check_data_identity(identities[shuffle], identities[shuffle], "/other/checkpoints/step_00000002")


@pytest.mark.parametrize("new_data", [False, True])
def test_a_resume_with_another_shuffle_window_is_refused(shards, new_data):
    """Windows of 1 sample and of the whole folder are two orders of the same data: the identity did not hold the
    window, and such a resume went on in silence in the other order."""
    whole, one = identity(shards), identity(shards, shuffle_window=1)
    assert {**one, "shuffle_window": None} == whole  # nothing else differs
    with pytest.raises(CheckpointError, match=r"it was trained with data shuffle_window=None, this run has "
                                              r"shuffle_window=1; an exact resume needs the same data, seed, shuffling"):
        check_data_identity(whole, one, "/other/checkpoints/step_00000002", new_data)


def test_a_checkpoint_from_before_the_window_was_recorded_resumes(shards):
    saved = identity(shards, shuffle_window=1)
    del saved["shuffle_window"]
    check_data_identity(saved, identity(shards, shuffle_window=1), "/other/checkpoints/step_00000002")
