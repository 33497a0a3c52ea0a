"""The Transformer's FLOPs per token against a sum done by hand on a 3 x 3 grid.

MFU in the training log and `plan`'s step time both divide by these FLOPs: halving the attention term or
counting a text logit row the head never computes shifts both in silence, since no test re-derives them.
The masks below are written out cell by cell from their definitions (DESIGN.md), not built by
megadalle.attention.masks, so a slip in flops.py cannot hide behind the helper it calls.
"""
import pytest

from megadalle.flops import forward_flops_per_token, transformer_flops_per_token

from .three_by_three_model import CFG

# Which image keys (columns, raster order) each image query (rows) may attend to; causal in every layer.
ROW = ["100000000",  # the query itself and the previous grid_size (3) positions
       "110000000",
       "111000000",
       "111100000",
       "011110000",
       "001111000",
       "000111100",
       "000011110",
       "000001111"]
COLUMN = ["100000000",  # the earlier positions of the query's own column
          "010000000",
          "001000000",
          "100100000",
          "010010000",
          "001001000",
          "100100100",
          "010010010",
          "001001001"]
CONV = ["100000000",  # the 3 x 3 neighbourhood, no wraparound: (row, col) sees rows and cols within 1, earlier only
        "110000000",
        "011000000",
        "110100000",
        "111110000",
        "011011000",
        "000110100",
        "000111110",
        "000011011"]


def allowed_pairs(image_block: list[str]) -> int:
    """Query-key pairs one layer computes: text queries see the text causally (1 + 2 + 3), every image query sees
    all 3 text positions, and the image keys its layer's block allows."""
    text = 3
    return text * (text + 1) // 2 + 9 * text + sum(row.count("1") for row in image_block)


def test_hand_masks_count_what_each_kind_allows():
    assert [allowed_pairs(m) for m in (ROW, COLUMN, CONV)] == [6 + 27 + 30, 6 + 27 + 18, 6 + 27 + 29]


def test_forward_flops_per_token_of_a_tiny_config_equal_the_hand_sum():
    """2 FLOPs per multiply-add. Per token: every block's QKV (3 d^2), output projection (d^2) and MLP
    (2 x 4 d^2); the head's text rows (text_len - 1: the last text position predicts the first image token,
    through the image rows) and its grid_len image rows, spread over the 12 positions; and per allowed
    query-key pair both QK^T and PV, d multiply-adds each over all heads."""
    d, seq = 8, 12
    dense = 3 * (4 + 2 * 4) * d * d
    head = d * ((3 - 1) * 10 + 9 * 6) / seq
    attention = 2 * d * sum(allowed_pairs(m) for m in (ROW, COLUMN, CONV)) / seq
    assert (dense, head * seq, attention * seq) == (2304, 592, 2816)
    assert forward_flops_per_token(CFG) == pytest.approx(2 * (2304 + (592 + 2816) / 12), rel=1e-12)  # 5176
    assert transformer_flops_per_token(CFG) == pytest.approx(3 * 5176, rel=1e-12)  # the backward twice the forward
