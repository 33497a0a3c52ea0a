"""How one validation reads its split: at most one pass, every sample scored once.

The validation stream is a seeded permutation of the split (train/task.validation_data), as endless as the training
stream (order.py): position p reads the sample that epoch p // N puts at p mod N. Cutting `trainer.eval_batches`
global batches from it scored a small split's samples several times in one validation, unequally weighted where the
batches did not divide it, and a split smaller than the ranks' micro-batches together repeated samples inside one
micro-batch (CLIP's loss leaves a repeat out of the contrast, so one image read four times scored no contrast at all). So a
validation reads whole global batches of the first N positions only, the first epoch's (a random subset spread over
the split, each sample once): fewer than eval_batches where they would not fit, with fewer accumulated micro-batches
where not even one global batch fits. Every micro-batch is full, so the mean over micro-batches is the mean over
samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from megadalle.data.order import fewer_pairs
from megadalle.errors import UserError


class SplitSmallerThanBatch(UserError, ValueError):
    """A validation split with fewer samples than one micro-batch on every data-parallel rank."""


@dataclass(frozen=True)
class OnePass:
    """`batches` global batches of micro_batch x `grad_accum` x ranks samples: `samples` of the split, each once;
    `shortfall` says in one line what that leaves out of what trainer.eval_batches asked (None: nothing)."""

    grad_accum: int
    batches: int
    samples: int
    shortfall: str | None


def one_pass(micro_batch: int, grad_accum: int, ranks: int, eval_batches: int, total: int, shards,
             contrastive: bool = False) -> OnePass:
    """The reading of a validation split of `total` samples (`shards`, named in the messages) for the training's
    micro-batch, accumulation and data-parallel `ranks`, asked for `eval_batches` global batches. A split too small
    is refused with the ways out that can succeed: a lower trainer.micro_batch only where one sample per rank fits,
    and for a `contrastive` task (CLIP) where that still reads 2 pairs (one pair scores a val/loss of 0, refused by
    preflight/train_verbs.py)."""
    together = micro_batch * ranks
    if together > total:
        lower = ", lower trainer.micro_batch," if total >= max(ranks, 2 if contrastive else 1) else ""
        raise SplitSmallerThanBatch(
            f"the validation split {shards} holds {total} sample{'s' if total != 1 else ''}, fewer than one "
            f"micro-batch on every rank (trainer.micro_batch={micro_batch} x {ranks} data-parallel "
            f"rank{'s' if ranks != 1 else ''} = {together}): each validation batch would score some samples twice"
            f"{fewer_pairs(contrastive, 'it holds')}; give data.val_shards of at least {together} "
            f"samples{lower} or set trainer.eval_every=0")
    accum = min(grad_accum, total // together)
    batches = min(eval_batches, total // (together * accum))
    samples, asked = batches * together * accum, eval_batches * together * grad_accum
    shortfall = None if samples == asked else (
        f"the validation split {shards} holds {total} samples, fewer than the {asked} of trainer.eval_batches="
        f"{eval_batches} global batches; each validation scores {samples} of them, each once")
    return OnePass(accum, batches, samples, shortfall)
