"""Sample order: a seeded bijection per epoch, independent of everything but (seed, epoch, position)."""
from __future__ import annotations

import numpy as np
import pytest

from megadalle.data.order import Order, permute, reader_positions, round_keys, sample_ids


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection(n):
    out = permute(np.arange(n), n, round_keys(5, 2))
    assert sorted(out.tolist()) == list(range(n))


def test_seed_and_epoch_change_the_order():
    n = 100
    base = sample_ids(np.arange(n), n, seed=0)
    assert not np.array_equal(base, np.arange(n))
    assert not np.array_equal(base, sample_ids(np.arange(n), n, seed=1))
    next_epoch = sample_ids(np.arange(n, 2 * n), n, seed=0)
    assert sorted(next_epoch.tolist()) == list(range(n)) and not np.array_equal(base, next_epoch)
    assert np.array_equal(sample_ids(np.arange(n), n, seed=0, shuffle=False), np.arange(n))


def test_order_is_pointwise():
    """Evaluating any subset of positions gives the same ids as the whole stream: no hidden state."""
    n, positions = 37, np.arange(0, 120)
    whole = sample_ids(positions, n, seed=3)
    pick = np.array([5, 119, 40, 74, 0])
    assert np.array_equal(sample_ids(pick, n, seed=3), whole[pick])


def test_reader_positions_partition_the_global_batch():
    parts = [reader_positions(4, 12, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(48, 60))
    assert all(len(p) == 4 for p in parts)


def test_windowed_order_is_a_bijection_per_epoch_and_local():
    counts = [7, 3, 9, 4, 1, 12, 5]
    order = Order(counts, seed=3, window=6)
    total, shard_of = sum(counts), np.repeat(np.arange(len(counts)), counts)
    epochs = [order.ids(np.arange(e * total, (e + 1) * total)) for e in range(3)]
    assert all(sorted(ids.tolist()) == list(range(total)) for ids in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    for start in range(0, total, 6):  # a window's samples come from consecutive shards of the epoch's order
        assert len(set(shard_of[epochs[0][start:start + 6]])) <= 3
    pick = np.array([40, 3, 77, 12])
    assert np.array_equal(order.ids(pick), np.concatenate(epochs)[pick])
    assert np.array_equal(Order(counts, seed=3).ids(np.arange(total)), sample_ids(np.arange(total), total, seed=3))
