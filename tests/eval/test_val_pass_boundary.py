"""The smallest validation split a run accepts: exactly one micro-batch on every data-parallel rank. It fits (one
global batch, every sample scored once), so refusing it at start-up ("fewer than one micro-batch") was wrong; one
sample fewer does not fit and is refused. Hand arithmetic: micro_batch x ranks samples make the one micro-batch
per rank."""
from __future__ import annotations

import pytest

from megadalle.data.val_pass import OnePass, SplitSmallerThanBatch, one_pass


@pytest.mark.parametrize("micro_batch, ranks", [(4, 1), (2, 2)])
def test_a_split_of_exactly_one_micro_batch_per_rank_is_read_once(micro_batch, ranks):
    assert one_pass(micro_batch, 1, ranks, 1, 4, "val") == OnePass(grad_accum=1, batches=1, samples=4, shortfall=None)


@pytest.mark.parametrize("micro_batch, ranks", [(4, 1), (2, 2)])
def test_one_micro_batch_per_rank_is_read_without_accumulation_where_more_was_asked(micro_batch, ranks):
    """grad_accum 2 and eval_batches 3 asked 3 x 2 x 4 = 24 samples: the 4 there are read as one micro-batch each."""
    read = one_pass(micro_batch, 2, ranks, 3, 4, "val")
    assert (read.grad_accum, read.batches, read.samples) == (1, 1, 4)
    assert "holds 4 samples, fewer than the 24 of trainer.eval_batches=3" in read.shortfall


@pytest.mark.parametrize("micro_batch, ranks", [(4, 1), (2, 2)])
def test_one_sample_fewer_than_a_micro_batch_per_rank_is_refused(micro_batch, ranks):
    with pytest.raises(SplitSmallerThanBatch, match=rf"holds 3 samples, fewer than one micro-batch on every rank "
                                                    rf"\(trainer.micro_batch={micro_batch} x {ranks} data-parallel"):
        one_pass(micro_batch, 1, ranks, 1, 3, "val")
