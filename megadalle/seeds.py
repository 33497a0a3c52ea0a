"""The seeds a run's generators take: the root seed's range, and the seeds derived from it and an index.

A root seed (`seed=` of every verb but generate) must lie in [0, 2**63): numpy takes no negative seed, torch none
from 2**64, and the ranks' own seeds add their rank to it. A seed of `date +%s%N` (about 1.7e18) is in range.
A derived seed (a step's, a batch's) for a generator of its own is `seed * 1_000_003 + index`, so neighbouring
seeds' streams stay apart, taken modulo 2**64, the seeds torch's generators take: from seed ~9.2e12 on the product
overflowed them, and every training verb stopped at its first batch with a traceback.
"""
from __future__ import annotations

ROOT_SEEDS = 1 << 63
"""Root seeds lie in [0, ROOT_SEEDS)."""


def derived_seed(seed: int, index: int) -> int:
    """The seed of stream `index` (a step, a batch) of root seed `seed`; every value torch took before maps to
    itself."""
    return (seed * 1_000_003 + index) % (1 << 64)
