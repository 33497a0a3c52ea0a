"""The EMA's pieces in one process (no DeepSpeed): ZeRO-3's partition sizes, consolidation, re-slicing
for another data-parallel size, a missing rank file refused. A plain full EMA is the reference."""
import pytest
import torch
from torch import nn

from megadalle.train.ema import EMA, EmaPieces, file_name, piece_range, warmed_decay


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 1))  # 42, 7, 7, 7, 7 and 1 elements


def train_and_save(net, folder, dp_world, decay=0.9, updates=3):
    """Every rank's EMA over the same `updates` weight changes, saved as its file; the full EMA beside."""
    emas = [EMA(net.named_parameters(), decay, r, dp_world) for r in range(dp_world)]
    full = {name: p.detach().clone() for name, p in net.named_parameters()}
    for step in range(updates):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        for ema in emas:
            ema.update(step)
        for name, p in net.named_parameters():
            full[name] = warmed_decay(decay, step) * full[name] + (1 - warmed_decay(decay, step)) * p.detach()
    folder.mkdir(exist_ok=True)
    for r, ema in enumerate(emas):
        ema.save(folder / file_name(r))
    return emas, full


def test_piece_ranges_are_zero3_partitions():
    assert [piece_range(7, r, 3) for r in range(3)] == [(0, 3), (3, 3), (6, 1)]
    assert [piece_range(1, r, 2) for r in range(2)] == [(0, 1), (1, 0)]  # the second rank owns nothing


def test_pieces_consolidate_and_reslice(tmp_path):
    net = model()
    emas, full = train_and_save(net, tmp_path, dp_world=3)
    total = sum(p.numel() for p in net.parameters())
    assert all(abs(e.nbytes() / 4 - total / 3) <= 2 * len(full) for e in emas)  # ceil(n/3) slices: < 2 off each
    pieces = EmaPieces(tmp_path)
    for name, value in pieces:
        torch.testing.assert_close(value, full[name], rtol=1e-6, atol=1e-7)

    for dp_world in (1, 2, 4):  # a resume on another data-parallel size takes its own slices
        for r in range(dp_world):
            ema = EMA(model().named_parameters(), 0.9, r, dp_world)
            ema.load(tmp_path)
            for name, piece in ema.pieces.items():
                expected = full[name].reshape(-1)[piece.start:piece.start + piece.length]
                torch.testing.assert_close(ema.shadow[name], expected, rtol=1e-6, atol=1e-7)


def test_missing_rank_file_and_shape_change_are_refused(tmp_path):
    train_and_save(model(), tmp_path, dp_world=2)
    (tmp_path / file_name(1)).unlink()
    with pytest.raises(ValueError, match="only .* elements saved|in no file"):
        EmaPieces(tmp_path)
    train_and_save(model(), tmp_path, dp_world=2)
    wider = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    with pytest.raises(ValueError, match=r"EMA of 0.weight has shape \(7, 5\), the model \(8, 5\)"):
        EMA(wider.named_parameters(), 0.9).load(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no EMA files"):
        EmaPieces(tmp_path / "nothing")
