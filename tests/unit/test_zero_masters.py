"""A ZeRO checkpoint with a rank's or a stage's optimizer shard missing is refused, naming what is there.

Reading the masters themselves is checked against DeepSpeed's own reader on real runs
(tests/distributed/test_bf16_reduction.py, test_export.py).
"""
import pytest

from megadalle.train.checkpoint import CheckpointError
from megadalle.train.zero_masters import has_masters, zero_masters


def shards(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).touch()
    return folder


def test_no_shards_means_no_masters(tmp_path):
    folder = shards(tmp_path / "ckpt", ["mp_rank_00_model_states.pt"])
    assert not has_masters(folder)
    with pytest.raises(CheckpointError, match="holds no ZeRO optimizer shards"):
        list(zero_masters(folder))


def test_a_missing_rank_is_named(tmp_path):
    folder = shards(tmp_path / "ckpt", [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 2)])
    with pytest.raises(CheckpointError, match=r"stage 0 has optimizer shards of ranks \[0, 2\]"):
        has_masters(folder)


def test_a_stage_short_of_ranks_is_named(tmp_path):
    names = [f"bf16_zero_pp_rank_{r}_mp_rank_{s:02d}_optim_states.pt" for r, s in ((0, 0), (1, 0), (0, 1))]
    with pytest.raises(CheckpointError, match=r"stage 1 has optimizer shards of ranks \[0\]; stage 0 has 2"):
        has_masters(shards(tmp_path / "ckpt", names))
