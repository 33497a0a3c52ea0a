"""The windowed order (`Order(window=W)`) reshuffles at every epoch and in every window, as order.py documents.

An epoch is the shards in a seeded order, concatenated, each run of W samples permuted within itself, all keyed by
(seed, epoch[, window]). A shard order fixed across epochs would put the same shards side by side in every epoch,
so the same few shards would share a window (and so a batch) forever; one key for all windows of an epoch would
give every window the same pattern, so a sample's slot in its window would repeat with period W. Both still yield a
permutation, which is all test_order.py checks; these tests pin the two dependencies against hand-built orders.
"""
from __future__ import annotations

import numpy as np

from megadalle.data.order import Order

COUNTS = [5, 2, 7, 3, 6, 4]


def shard_sequence(counts: list[int], shard_order: list[int]) -> list[int]:
    """The sample ids of an epoch that reads whole shards, in stored order, in `shard_order` (built by hand)."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [int(starts[s]) + k for s in shard_order for k in range(counts[s])]


def shard_order_of(ids: np.ndarray, counts: list[int]) -> list[int]:
    """The order in which an epoch's ids visit the shards (each shard read as one run)."""
    shard_of = np.repeat(np.arange(len(counts)), counts)[ids]
    return [int(s) for i, s in enumerate(shard_of) if i == 0 or s != shard_of[i - 1]]


def test_each_epoch_reads_the_shards_in_its_own_order():
    """Window 1 leaves the samples in stored order, so an epoch is its shard order alone: each epoch's must be a
    permutation of the shards, read whole, and differ from every other epoch's."""
    order, total = Order(COUNTS, seed=3, window=1), sum(COUNTS)
    orders = []
    for epoch in range(4):
        ids = order.ids(np.arange(epoch * total, (epoch + 1) * total))
        shards = shard_order_of(ids, COUNTS)
        assert sorted(shards) == list(range(len(COUNTS)))
        assert ids.tolist() == shard_sequence(COUNTS, shards)
        orders.append(tuple(shards))
    assert len(set(orders)) == 4, f"shard orders repeat across epochs: {orders}"


def window_patterns(order: Order, epoch: int, total: int, window: int) -> list[list[int]]:
    """Each window's ids relative to the window's start (one shard: no shard order in the way)."""
    ids = order.ids(np.arange(epoch * total, (epoch + 1) * total)).tolist()
    return [[i - start for i in ids[start:start + window]] for start in range(0, total, window)]


def test_every_window_is_permuted_with_its_own_key():
    """One shard of 43 samples in windows of 8: each window holds exactly its own samples, permuted (the last
    one's 3 included), and no two full windows, of one epoch or of two, share a pattern."""
    total, window = 43, 8
    order = Order([total], seed=3, window=window)
    patterns = [window_patterns(order, epoch, total, window) for epoch in range(2)]
    for epoch in patterns:
        assert [sorted(p) for p in epoch] == [list(range(8))] * 5 + [list(range(3))]
    full = [tuple(p) for epoch in patterns for p in epoch[:5]]
    assert tuple(range(8)) not in full
    assert len(set(full)) == len(full), f"windows share a permutation: {full}"


def test_the_seed_changes_every_window():
    total, window = 43, 8
    a = window_patterns(Order([total], seed=3, window=window), 0, total, window)
    b = window_patterns(Order([total], seed=4, window=window), 0, total, window)
    assert all(x != y for x, y in zip(a[:5], b[:5]))
