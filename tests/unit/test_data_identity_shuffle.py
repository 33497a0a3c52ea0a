"""`data.shuffle` is part of the data identity a checkpoint records: step N of shard order is not step N of a
seeded permutation. A run that resumes ANOTHER run's checkpoint (`resume=<other>/checkpoints/step_N` into a new
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


@pytest.fixture
def identities(tmp_path):
    """{shuffle: the identity of a run on one 6-sample shard folder with data.shuffle=shuffle}, all else equal."""
    with ShardWriter(tmp_path / "shards") as writer:
        for n in range(6):
            writer.write({"__key__": f"s{n}", "codes.npy": np.full((2, 2), n, np.uint16), "txt": f"caption {n}"})
    return {shuffle: DVAETask(DVAEConfig(image_size=16), DataConfig(shards=str(tmp_path / "shards"), num_workers=0,
                                                                   shuffle=shuffle)).data_identity(PART)
            for shuffle in (True, False)}


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
