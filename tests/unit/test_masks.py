"""Each mask against a brute-force reading of DESIGN.md's definitions, on small grids."""
import itertools

import pytest
import torch

from megadalle.attention.masks import MASK_KINDS, PAPER_PATTERN, MaskSpec, allowed, dense_mask, layer_kinds


def brute(kind, p, q, w, k=3, wrap=True):
    """Image position p (query) may see image position q (key): the definitions spelled out with loops."""
    if q > p:
        return False
    (rp, cp), (rq, cq) = divmod(p, w), divmod(q, w)
    if kind == "dense":
        return True
    if kind == "row":
        return p - w <= q
    if kind == "row_strict":
        return rq == rp
    if kind == "column":
        return cq == cp
    half = k // 2
    if wrap:
        return any(q == p + a * w + b for a in range(-half, half + 1) for b in range(-half, half + 1))
    return abs(rq - rp) <= half and abs(cq - cp) <= half


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("h,w", [(3, 4), (4, 3), (5, 5), (2, 6)])
@pytest.mark.parametrize("kernel,wrap", [(3, True), (5, True), (3, False), (5, False)])
def test_mask_matches_brute_force(kind, h, w, kernel, wrap):
    t = 3
    spec = MaskSpec(kind, t, h, w, kernel, wrap)
    m = dense_mask(spec)
    n = t + h * w
    for i, j in itertools.product(range(n), range(n)):
        if i < t:
            expect = j < t and j <= i
        elif j < t:
            expect = True
        else:
            expect = brute(kind, i - t, j - t, w, kernel, wrap)
        assert m[i, j].item() == expect, (kind, i, j)


def test_row_example_from_design():
    """W = 4: image position 8 (1-based) sees 4, 5, 6, 7 and itself."""
    spec = MaskSpec("row", text_len=2, grid_h=4, grid_w=4)
    seen = [j - 2 + 1 for j in range(spec.seq_len) if j >= 2 and dense_mask(spec)[2 + 7, j]]
    assert seen == [4, 5, 6, 7, 8]


def test_row_strict_sees_only_its_own_row():
    spec = MaskSpec("row_strict", text_len=1, grid_h=3, grid_w=4)
    assert [j - 1 for j in range(1, spec.seq_len) if dense_mask(spec)[1 + 5, j]] == [4, 5]


def test_conv_wraps_at_the_left_edge():
    """A query in column 0 sees the right-hand columns of the row above (the paper's wraparound)."""
    w = 6
    spec = MaskSpec("conv", text_len=1, grid_h=4, grid_w=w, kernel=3, wrap=True)
    p = 2 * w  # row 2, column 0
    row_above_last = 1 + (2 * w - 1)
    assert dense_mask(spec)[1 + p, row_above_last]
    clipped = MaskSpec("conv", text_len=1, grid_h=4, grid_w=w, kernel=3, wrap=False)
    assert not dense_mask(clipped)[1 + p, row_above_last]


def test_text_is_causal_and_image_sees_all_text():
    spec = MaskSpec("column", text_len=5, grid_h=3, grid_w=3)
    m = dense_mask(spec)
    assert torch.equal(m[:5, :5], torch.ones(5, 5, dtype=torch.bool).tril())
    assert not m[:5, 5:].any()
    assert m[5:, :5].all()


def test_allowed_broadcasts_like_dense():
    spec = MaskSpec("conv", text_len=4, grid_h=4, grid_w=4, kernel=3)
    q = torch.tensor([10, 11, 19])
    k = torch.arange(spec.seq_len)
    assert torch.equal(allowed(spec, q[:, None], k[None, :]), dense_mask(spec)[q])


def test_paper_layer_pattern():
    kinds = layer_kinds(64, PAPER_PATTERN, "conv")
    for i in range(1, 64):
        assert kinds[i - 1] == ("column" if (i - 2) % 4 == 0 else "row"), i
    assert kinds[-1] == "conv"


@pytest.mark.parametrize("bad,match", [
    (dict(kind="diagonal"), "unknown mask kind 'diagonal'"),
    (dict(kernel=4), "kernel must be odd, got 4"),
    (dict(text_len=0), "text_len must be positive, got 0"),
])
def test_bad_specs_are_named(bad, match):
    args = dict(kind="row", text_len=4, grid_h=2, grid_w=2, kernel=3) | bad
    with pytest.raises(ValueError, match=match):
        MaskSpec(**args)


def test_pattern_longer_than_layers_is_rejected():
    with pytest.raises(ValueError, match="longer than n_layers=2"):
        layer_kinds(2, ["row", "column", "row"], None)
