"""Sample order as a pure function of (seed, epoch, global position): the basis of elastic resume.

The training stream is the infinite sequence of positions 0, 1, 2, ...; position p belongs to
epoch p // N (N samples in the data set) and reads sample `permute(p % N, N, key(seed, epoch))`.
Step s's global batch is positions [s*B, (s+1)*B), cut into R strided parts: reader i of R
takes positions i, i+R, ... of it (R = ranks x gradient-accumulation micro-batches). The order of
samples depends on neither the world size nor the number of DataLoader workers, so a run
resumed at step s on any number of ranks (same B) sees the same global batches, and every
epoch visits each sample exactly once. Batches may straddle an epoch boundary (no sample dropped), so one may hold a
sample twice: the loader names each row's sample id (`sample`), and CLIP's contrastive loss leaves the repeat out. A
global batch larger than N would hold some samples twice in every update: training refuses it
(`check_global_batch`).

The permutation is a keyed Feistel network with cycle walking (as in levanter): O(1) memory,
evaluated for just the positions a rank needs, for data sets of any size.

With a shuffle window W (`Order.window`) an epoch is instead: the shards in a seeded order, their
samples concatenated, and each run of W consecutive samples permuted within itself. A batch then
reads from the few shards of one window instead of from all of them (friendlier to network file
systems), at the price of mixing like a shuffle buffer of W. It is still a pure function of
(seed, epoch, position), so resume and elasticity hold the same way.
"""
from __future__ import annotations

import hashlib

import numpy as np

from megadalle.errors import UserError

ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-mixing hash of 64-bit words (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _M1
        x = x ^ (x >> np.uint64(27))
        x = x * _M2
        return x ^ (x >> np.uint64(31))


def round_keys(seed: int, epoch: int, window: int | None = None) -> np.ndarray:
    """ROUNDS 64-bit keys derived from (seed, epoch[, window]) by SHA-256 (stable across platforms and versions)."""
    tag = f"megadalle-order:{seed}:{epoch}" + ("" if window is None else f":w{window}")
    digest = hashlib.sha256(tag.encode()).digest()
    digest += hashlib.sha256(digest).digest()
    return np.frombuffer(digest[: 8 * ROUNDS], dtype="<u8").astype(np.uint64)


def permute(i: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """A bijection of [0, n) applied to `i`: Feistel on 2*h bits, re-applied while outside [0, n)."""
    i = np.asarray(i, dtype=np.uint64)
    if n <= 1:
        return i.astype(np.int64)
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << np.uint64(half)) | right

    out = encrypt(i)
    outside = out >= np.uint64(n)
    while outside.any():  # the domain is < 4n, so a few passes suffice
        out[outside] = encrypt(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


def sample_ids(positions: np.ndarray, total: int, seed: int, shuffle: bool = True) -> np.ndarray:
    """Global sample id read at each stream position."""
    positions = np.asarray(positions, dtype=np.int64)
    epochs, within = positions // total, positions % total
    if not shuffle:
        return within
    out = np.empty_like(within)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = permute(within[sel], total, round_keys(seed, int(epoch)))
    return out


class Order:
    """Sample ids of stream positions for a data set with these shard sizes (see the module docstring)."""

    def __init__(self, counts: list[int], seed: int, shuffle: bool = True, window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"shuffle window={window} must be positive or None (one permutation per epoch)")
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.total, self.seed, self.shuffle, self.window = int(self.counts.sum()), seed, shuffle, window
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def ids(self, positions: np.ndarray) -> np.ndarray:
        if not self.shuffle or self.window is None:
            return sample_ids(positions, self.total, self.seed, self.shuffle)
        positions = np.asarray(positions, dtype=np.int64)
        epochs, within = positions // self.total, positions % self.total
        out = np.empty_like(within)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._windowed(within[sel], int(epoch))
        return out

    def _windowed(self, i: np.ndarray, epoch: int) -> np.ndarray:
        shard_order, ends = self._shards(epoch)
        w, j = i // self.window, i % self.window
        k = np.empty_like(i)
        for win in np.unique(w):
            sel = w == win
            size = min(self.window, self.total - int(win) * self.window)
            k[sel] = win * self.window + permute(j[sel], size, round_keys(self.seed, epoch, int(win)))
        slot = np.searchsorted(ends, k, side="right")
        return self.starts[shard_order[slot]] + k - (ends[slot] - self.counts[shard_order[slot]])

    def _shards(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's shard order and the running sample count along it (cached: one epoch at a time)."""
        if self._epoch is None or self._epoch[0] != epoch:
            keys = round_keys(self.seed, epoch, -1)
            order = permute(np.arange(len(self.counts)), len(self.counts), keys)
            self._epoch = (epoch, order, np.cumsum(self.counts[order]))
        return self._epoch[1], self._epoch[2]


def reader_positions(step: int, global_batch: int, reader: int, readers: int) -> np.ndarray:
    """Stream positions of part `reader` of `readers` of step `step`'s global batch (strided)."""
    start = step * global_batch
    return np.arange(start + reader, start + global_batch, readers, dtype=np.int64)


def fewer_pairs(contrastive: bool, holds: str) -> str:
    """What a batch that reads a sample twice does to a `contrastive` task's loss, for a refusal; '' for the others."""
    return f" (and CLIP contrast fewer pairs than {holds})" if contrastive else ""


class BatchLargerThanData(UserError, ValueError):
    """A global batch with more samples than the data set: each update would read some of them twice."""


def check_global_batch(micro_batch: int, grad_accum: int, ranks: int, total: int, shards,
                       contrastive: bool = False) -> None:
    """Refuse a global batch (`micro_batch` x `grad_accum` x `ranks` data-parallel ranks) larger than the `total`
    samples of the training shards `shards`: positions [s*B, (s+1)*B) would wrap into the next epoch within one
    update, silently (the module docstring). A `contrastive` task's refusal also says what it does to the contrast."""
    batch = micro_batch * grad_accum * ranks
    if batch > total:
        raise BatchLargerThanData(
            f"global batch {batch} (trainer.micro_batch={micro_batch} x trainer.grad_accum={grad_accum} x {ranks} "
            f"data-parallel rank{'s' if ranks != 1 else ''}) is larger than the {total} samples of data.shards="
            f"{shards}: each update would read some samples twice{fewer_pairs(contrastive, 'the batch holds')}; lower "
            f"trainer.micro_batch or trainer.grad_accum to at most {total} samples an update, or train on more data")
