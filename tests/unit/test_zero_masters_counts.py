"""Optimizer shards that hold more elements than the parameters' shapes need are refused, never cut to fit.

Hand-made checkpoints in the two layouts DeepSpeed 0.19.8 writes (megadalle/train/zero_masters.py's docstring):
two data-parallel ranks, parameters `b` of shape (3,) and then `a` of shape (2, 2), valued 1..7 in that order.
Surplus elements mean the shards and the shapes disagree (a damaged file, shards of another run beside these):
cutting them to the shape exported weights that looked fine.
"""
import pytest
import torch

from megadalle.train.checkpoint import CheckpointError
from megadalle.train.zero_masters import zero_masters

SHAPES = {"b": torch.Size([3]), "a": torch.Size([2, 2])}
EXPECTED = {"b": torch.tensor([1.0, 2.0, 3.0]), "a": torch.tensor([[4.0, 5.0], [6.0, 7.0]])}


def checkpoint(folder, ranks: list[dict], model_file: str):
    """A checkpoint folder with each rank's optimizer state and the model-states file naming the shapes."""
    folder.mkdir()
    for rank, state in enumerate(ranks):
        torch.save({"optimizer_state_dict": state}, folder / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    torch.save({"module": {}, "buffer_names": [], "param_shapes": [SHAPES]}, folder / model_file)
    return folder


def zero12(folder, a_on_rank1: int = 3):
    """ZeRO-1/2: the flat group 1..7 plus one padding element, cut in two partitions of 4; `a` straddles them, its
    first element on rank 0 and `a_on_rank1` elements (3 when intact) on rank 1."""
    from deepspeed.utils.tensor_fragment import fragment_address

    flat = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0])
    ranks = [{"single_partition_of_fp32_groups": [flat[:4].clone()],
              "param_slice_mappings": [{"b": fragment_address(numel=3, start=0), "a": fragment_address(numel=1, start=3)}]},
             {"single_partition_of_fp32_groups": [flat[4:].clone()],
              "param_slice_mappings": [{"a": fragment_address(numel=a_on_rank1, start=0)}]}]
    return checkpoint(folder, ranks, "mp_rank_00_model_states.pt")


def zero3(folder, surplus: int = 0):
    """ZeRO-3: each rank holds ceil(numel / 2) elements of each parameter in order (2 of `b`, the last rank's
    second one padding, then 2 of `a`: 4 in all), across two flat groups of 3 and 1, plus `surplus` elements."""
    held = [[1.0, 2.0, 4.0, 5.0], [3.0, 0.0, 6.0, 7.0]]
    ranks = [{"fp32_flat_groups": [torch.tensor(values[:3]), torch.tensor(values[3:] + [0.0] * surplus)]}
             for values in held]
    return checkpoint(folder, ranks, "zero_pp_rank_0_mp_rank_00_model_states.pt")


def read(folder) -> dict:
    return dict(zero_masters(folder))


@pytest.mark.parametrize("layout", [zero12, zero3])
def test_intact_shards_give_the_parameters(tmp_path, layout):
    masters = read(layout(tmp_path / "ckpt"))
    assert list(masters) == ["b", "a"]
    for name, tensor in EXPECTED.items():
        torch.testing.assert_close(masters[name], tensor, rtol=0, atol=0)


def test_zero12_fragments_longer_than_the_shape_are_refused_with_the_counts(tmp_path):
    with pytest.raises(CheckpointError, match=r"the shards hold 5 elements of a, whose shape \(2, 2\) needs 4"):
        read(zero12(tmp_path / "ckpt", a_on_rank1=4))


def test_zero12_fragments_shorter_than_the_shape_are_refused_with_the_counts(tmp_path):
    with pytest.raises(CheckpointError, match=r"the shards hold 3 elements of a, whose shape \(2, 2\) needs 4"):
        read(zero12(tmp_path / "ckpt", a_on_rank1=2))


def test_zero3_flat_groups_one_element_longer_than_the_parameters_are_refused_with_both_counts(tmp_path):
    """ceil(3 / 2) + ceil(4 / 2) = 4 elements per rank; the shards hold 5."""
    with pytest.raises(CheckpointError, match=r"the parameters take 4 elements per rank, the shards hold 5"):
        read(zero3(tmp_path / "ckpt", surplus=1))
