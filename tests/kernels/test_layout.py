"""The block tables encode exactly the mask they were built from, and column layers stay block-sparse."""
import pytest
import torch

from .helpers import KINDS, spec_of
from megadalle.attention.masks import MaskSpec, allowed, dense_mask
from megadalle.kernels import build_layout, dense_from_layout, grid_column_major_order, tile_mask
from megadalle.kernels.layout import FULL, SKIP


def _layout(spec, seq_len, block_m, block_n, column_major):
    order = grid_column_major_order(spec.text_len, spec.grid_h, spec.grid_w, seq_len) if column_major else None
    return build_layout(lambda q, k: allowed(spec, q, k), seq_len, block_m, block_n, order), order


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("blocks", [(16, 16), (16, 32), (32, 16), (16, 128)])
@pytest.mark.parametrize("column_major", [False, True])
def test_both_streams_match_dense_mask(kind, blocks, column_major):
    spec = spec_of(kind, 13, 7, 9)
    seq_len = spec.seq_len - 1
    layout, order = _layout(spec, seq_len, *blocks, column_major)
    mask = dense_mask(spec)[:seq_len, :seq_len]
    if order is not None:
        mask = mask[order.long()][:, order.long()]
    for side in ("query", "key"):
        encoded = dense_from_layout(layout, side)
        # Exact equality means every allowed pair is covered and every full tile is truly full.
        assert torch.equal(encoded[:seq_len, :seq_len], mask), side
        assert not encoded[seq_len:].any() and not encoded[:, seq_len:].any(), side


@pytest.mark.parametrize("kind", KINDS)
def test_tiles_are_classified_and_pairs_skip_only_empty_halves(kind):
    spec = spec_of(kind, 16, 6, 6)  # a whole text block: image queries see it as full tiles
    layout, _ = _layout(spec, spec.seq_len, 16, 16, kind == "column")
    codes = layout.pair_tile
    assert ((codes != SKIP).any(1)).all(), "a pair item where neither half works loads K/V for nothing"
    assert (codes == FULL).any() and (codes >= 0).any()
    assert sorted(codes[codes >= 0].tolist()) == list(range(layout.bits.shape[0]))  # each partial tile once
    for t in range(layout.bits.shape[0]):
        bits = tile_mask(layout, t)
        assert bits.any() and not bits.all()
    assert layout.kv_loads() < sum(layout.fractions())  # pairs share K/V loads


@pytest.mark.parametrize("block", [64, 128])
def test_column_major_column_mask_is_as_sparse_as_row_at_the_12b_shape(block):
    def visited(kind, column_major):
        spec = MaskSpec(kind, 256, 32, 32)
        return sum(_layout(spec, spec.seq_len, block, block, column_major)[0].fractions())

    row, column = visited("row", False), visited("column", True)
    assert column <= 1.1 * row
    assert visited("column", False) > 2 * column  # raster order is what made it dense


def test_bad_inputs_name_the_value():
    spec = spec_of("row", 4, 2, 2)
    fn = lambda q, k: allowed(spec, q, k)  # noqa: E731
    with pytest.raises(ValueError, match="24"):
        build_layout(fn, 8, 24, 16)
    with pytest.raises(ValueError, match="permutation"):
        build_layout(fn, 8, 16, 16, order=torch.tensor([0, 1, 2, 3, 4, 5, 6, 6]))
    with pytest.raises(ValueError, match="query position 0"):
        build_layout(torch.zeros(8, 8, dtype=torch.bool), 8, 16, 16)
    with pytest.raises(ValueError, match="float32"):
        build_layout(torch.zeros(8, 8), 8, 16, 16)
