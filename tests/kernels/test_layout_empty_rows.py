"""build_layout refuses a mask with a query row that attends to no key (its softmax has no terms), and only that:
a key no query attends is harmless (its column is skipped). The two are checked on masks where the empty query
row and the unused key column sit at different positions, so a check of columns for rows is told apart."""
import pytest
import torch

from megadalle.kernels import build_layout, dense_from_layout

SEQ = 8


def lower_triangle() -> torch.Tensor:
    return torch.ones(SEQ, SEQ, dtype=torch.bool).tril()


def test_a_query_attending_no_key_is_named_by_its_position_though_every_key_is_used():
    mask = lower_triangle()
    mask[5] = False  # query 5 attends nothing; key 5 is still attended by queries 6 and 7
    assert mask.any(0).all()
    with pytest.raises(ValueError, match="query position 5 may attend to no key"):
        build_layout(mask, SEQ, 16, 16)


def test_the_position_named_is_the_query_in_the_mask_not_its_place_in_the_visiting_order():
    mask = lower_triangle()
    mask[2] = False
    with pytest.raises(ValueError, match="query position 2 may attend to no key"):
        build_layout(mask, SEQ, 16, 16, order=torch.arange(SEQ).flip(0))


def test_a_key_no_query_attends_is_accepted_when_every_query_attends_some_key():
    mask = torch.zeros(SEQ, SEQ, dtype=torch.bool)
    mask[:, 0] = True  # every query attends key 0 only: keys 1..7 unused
    layout = build_layout(mask, SEQ, 16, 16)
    assert torch.equal(dense_from_layout(layout)[:SEQ, :SEQ], mask)
