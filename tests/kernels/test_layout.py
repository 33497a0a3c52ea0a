"""The block tables encode exactly the mask they were built from, and column layers stay block-sparse."""
import pytest
import torch

from .helpers import KINDS, spec_of
from megadalle.attention.masks import MaskSpec, allowed, dense_mask
from megadalle.kernels import build_layout, dense_from_layout, grid_column_major_order, tile_mask


def _layout(spec, seq_len, block_m, block_n, column_major):
    order = grid_column_major_order(spec.text_len, spec.grid_h, spec.grid_w, seq_len) if column_major else None
    return build_layout(lambda q, k: allowed(spec, q, k), seq_len, block_m, block_n, order), order


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("blocks", [(16, 16), (16, 32), (32, 16)])
@pytest.mark.parametrize("column_major", [False, True])
def test_tables_match_dense_mask(kind, blocks, column_major):
    spec = spec_of(kind, 13, 7, 9)
    seq_len = spec.seq_len - 1
    layout, order = _layout(spec, seq_len, *blocks, column_major)
    mask = dense_mask(spec)[:seq_len, :seq_len]
    if order is not None:
        mask = mask[order.long()][:, order.long()]
    encoded = dense_from_layout(layout)
    # Exact equality means every allowed pair is covered and every full tile is truly full.
    assert torch.equal(encoded[:seq_len, :seq_len], mask)
    assert not encoded[seq_len:].any() and not encoded[:, seq_len:].any()


@pytest.mark.parametrize("kind", KINDS)
def test_tiles_are_classified_and_transposed_tables_list_the_same_tiles(kind):
    spec = spec_of(kind, 16, 6, 6)  # a whole text block: image queries see it as full tiles
    layout, _ = _layout(spec, spec.seq_len, 16, 16, kind == "column")

    def tiles(ptr, idx, tile=None, transposed=False):
        out = set()
        for a in range(ptr.numel() - 1):
            for i in range(int(ptr[a]), int(ptr[a + 1])):
                pair = (int(idx[i]), a) if transposed else (a, int(idx[i]))
                out.add(pair + ((int(tile[i]),) if tile is not None else ()))
        return out

    full = tiles(layout.full_ptr, layout.full_idx)
    partial = tiles(layout.part_ptr, layout.part_idx, layout.part_tile)
    assert full == tiles(layout.t_full_ptr, layout.t_full_idx, transposed=True)
    assert partial == tiles(layout.t_part_ptr, layout.t_part_idx, layout.t_part_tile, transposed=True)
    assert full and partial and not full & {(m, n) for m, n, _ in partial}
    for _, _, t in partial:
        bits = tile_mask(layout, t)
        assert bits.any() and not bits.all()


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
