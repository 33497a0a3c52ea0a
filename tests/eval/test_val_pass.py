"""A validation reads at most one pass of its split: whole global batches of its first samples, each scored once,
fewer than trainer.eval_batches where the split is small (said once), and a split smaller than one micro-batch on
every rank refused when the run starts. The split's stream is endless (position p reads sample p mod N), as the
loaders' is."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from megadalle.data.order import reader_positions
from megadalle.data.val_pass import SplitSmallerThanBatch, one_pass
from megadalle.train.task import DataPart, Task
from megadalle.train.validate import Validator


class Split(Task):
    """A split of `total` samples, read as the loaders read one: sample ids by position, strided over readers."""

    name = "split"

    def __init__(self, total: int):
        self.total = total

    def validation_split(self):
        return "val", self.total

    def validation_batches(self, part: DataPart):
        step = 0
        while True:
            for a in range(part.grad_accum):
                positions = reader_positions(step, part.global_batch, part.reader(a), part.readers)
                yield {"ids": torch.as_tensor(positions % self.total)}
            step += 1

    def validation_loss(self, model, batch, step):
        return {"loss": float(batch["ids"].double().mean())}


def validator(total: int, part: DataPart, eval_batches: int, every: int = 1) -> Validator:
    built = SimpleNamespace(engine=SimpleNamespace(global_rank=0, module=torch.nn.Module()), model=None,
                            device=torch.device("cpu"), dtype=torch.float32, dp_group=None, pipeline=None)
    return Validator(Split(total), built, part, every, eval_batches, seed=0)


def scored(v: Validator) -> list[int]:
    return [int(i) for batch in v.batches() for i in batch["ids"]]


def test_a_small_split_is_scored_once_in_fewer_batches_said_once(capsys):
    """The defaults (eval_batches 16) on an 8-sample split scored each sample 16 times."""
    v = validator(10, DataPart(4, 1, 0, 1), eval_batches=16)
    assert scored(v) == list(range(8))  # two whole micro-batches; the last 2 samples would make a short one
    v.run(0), v.run(1)
    assert capsys.readouterr().out.count("[train] validation: the validation split val holds 10 samples, fewer than "
                                         "the 64 of trainer.eval_batches=16 global batches; each validation scores 8 "
                                         "of them, each once") == 1


def test_the_validation_loss_is_the_mean_over_the_samples_scored():
    """Cut from the endless stream, samples 0-3 came 7 times and 4-9 six times in 16 batches of a 10-sample split."""
    assert validator(10, DataPart(4, 1, 0, 1), eval_batches=16).run(0) == {"val/loss": pytest.approx(3.5)}


def test_a_split_smaller_than_a_global_batch_is_read_with_fewer_accumulated_micro_batches():
    v = validator(5, DataPart(2, 4, 0, 1), eval_batches=2)
    assert sorted(scored(v)) == [0, 1, 2, 3]
    assert one_pass(2, 4, 1, 2, 5, "val").grad_accum == 2
    assert one_pass(2, 4, 3, 3, 100, "val") == one_pass(2, 4, 3, 3, 72, "val")  # as asked: 3 x 24, no note
    assert one_pass(2, 4, 3, 3, 100, "val").shortfall is None


def test_each_rank_scores_its_own_samples_of_the_pass():
    parts = [DataPart(2, 2, rank, 2) for rank in range(2)]
    ids = [scored(validator(12, part, eval_batches=4)) for part in parts]
    assert sorted(ids[0] + ids[1]) == list(range(8))  # one global batch of 8 fits in 12
    assert len(ids[0]) == len(ids[1])  # as many micro-batches on every rank: ZeRO-3's gathers stay matched


def test_a_split_smaller_than_one_micro_batch_on_every_rank_is_refused_when_the_run_starts():
    with pytest.raises(SplitSmallerThanBatch, match=r"the validation split val holds 3 samples, fewer than one "
                                                    r"micro-batch on every rank \(trainer.micro_batch=2 x 2 "
                                                    r"data-parallel ranks = 4\)"):
        validator(3, DataPart(2, 1, 0, 2), eval_batches=1)
    validator(3, DataPart(2, 1, 0, 2), eval_batches=1, every=0)  # a run that never validates


def test_a_lower_micro_batch_is_advised_only_where_it_reads_the_split():
    """Fewer samples than ranks fit no micro-batch of 1; a contrastive split needs 2 pairs (preflight refuses 1)."""
    def advice(*args, **kwargs):
        with pytest.raises(SplitSmallerThanBatch) as refused:
            one_pass(*args, **kwargs)
        return "lower trainer.micro_batch" in str(refused.value)

    assert advice(2, 1, 1, 1, 1, "val")
    assert not advice(2, 1, 1, 1, 1, "val", contrastive=True)
    assert advice(2, 1, 2, 1, 2, "val", contrastive=True)
    assert not advice(1, 1, 3, 1, 2, "val")
