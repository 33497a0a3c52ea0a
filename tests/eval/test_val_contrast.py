"""CLIP's val/loss contrasts what its training contrasts: with `clip.negatives=update` each validation global batch's
micro-batches together, as gradient caching trains them (a contrastive loss grows with the log of the pairs it
contrasts: per micro-batch it sat about ln(grad_accum) below the training's loss); with `micro_batch` each
micro-batch alone; and where the split holds less than a global batch, fewer pairs, said and logged as val/contrast."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from megadalle.models.clip import CLIP
from megadalle.train.clip import ClipTask
from megadalle.train.task import DataPart, Task
from megadalle.train.validate import Validator

from tests.sample.tiny_clip import TINY

PAIRS = 16


def pairs() -> dict[str, torch.Tensor]:
    """The split: PAIRS random images with captions of 5 tokens and pads, a third of them marked cut, each its own
    sample."""
    g = torch.Generator().manual_seed(7)
    text = torch.randint(4, 50, (PAIRS, 8), generator=g)
    text[:, 5:] = 0
    return {"image": torch.rand(PAIRS, 3, 16, 16, generator=g), "text": text,
            "text_cut": torch.arange(PAIRS) % 3 == 0, "upscaled": torch.zeros(PAIRS, dtype=torch.bool),
            "sample": torch.arange(PAIRS)}


class Pairs(ClipTask):
    """The tiny CLIP validated on `pairs`, read in position order as the loaders cut a global batch (strided)."""

    def __init__(self, negatives: str, total: int = PAIRS):
        super().__init__(replace(TINY, negatives=negatives), None, None)
        self.total = total

    def validation_split(self):
        return "val", self.total

    def validation_batches(self, part: DataPart):
        split = pairs()
        for step in range(self.total // part.global_batch):
            for a in range(part.grad_accum):
                rows = torch.arange(step * part.global_batch + part.reader(a), (step + 1) * part.global_batch,
                                    part.readers)
                yield {name: value[rows] for name, value in split.items()}


def validated(task: ClipTask, part: DataPart, eval_batches: int = 1) -> dict[str, float]:
    torch.manual_seed(0)
    model = CLIP(task.cfg)
    built = SimpleNamespace(engine=SimpleNamespace(global_rank=0, module=model), model=model,
                            device=torch.device("cpu"), dtype=torch.float32, dp_group=None, pipeline=None)
    return Validator(task, built, part, 1, eval_batches, seed=0).run(0)


def plain(rows: list[torch.Tensor]) -> float:
    """The mean of CLIP.loss over these groups of the split's rows, in plain PyTorch."""
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    split = pairs()
    with torch.no_grad():
        return sum(model.loss(split["image"][r], split["text"][r])[0].item() for r in rows) / len(rows)


def test_update_negatives_validate_the_whole_global_batch_together():
    got = validated(Pairs("update"), DataPart(4, 2, 0, 1), eval_batches=2)
    whole = plain([torch.cat([torch.arange(s, s + 8, 2), torch.arange(s + 1, s + 8, 2)]) for s in (0, 8)])
    assert got["val/loss"] == pytest.approx(whole, rel=1e-6)
    alone = plain([torch.arange(s, s + 8, 2) for s in (0, 1, 8, 9)])
    assert abs(got["val/loss"] - alone) > 0.1
    assert got["val/captions_cut"] == pytest.approx(6 / 16) and got["val/images_upscaled"] == 0.0
    assert set(got) == {"val/loss", "val/clip_loss", "val/clip_acc", "val/temperature", "val/captions_cut",
                        "val/images_upscaled"}


def test_micro_batch_negatives_validate_each_micro_batch_alone():
    got = validated(Pairs("micro_batch"), DataPart(4, 2, 0, 1), eval_batches=2)
    assert got["val/loss"] == pytest.approx(plain([torch.arange(s, s + 8, 2) for s in (0, 1, 8, 9)]), rel=1e-6)
    assert "val/contrast" not in got


def test_a_split_smaller_than_a_global_batch_says_and_logs_its_smaller_contrast(capsys):
    """12 pairs against a global batch of 4 x 4: one global batch of 3 micro-batches of 4."""
    got = validated(Pairs("update", total=12), DataPart(4, 4, 0, 1))
    assert got["val/contrast"] == 12.0
    assert "each loss contrasts 12 pairs, the training's 16: val/loss is lower by about ln(16/12)" in \
        capsys.readouterr().out
    assert got["val/loss"] == pytest.approx(plain([torch.arange(12)]), rel=1e-6)


class PerMicroBatch(Pairs):
    """A task training the whole update (its runner is gradient caching) that validates each micro-batch alone."""

    def validation_update(self, part: DataPart):
        return None


def test_the_task_chooses_its_validation_of_the_whole_update():
    """The Validator told a gradient-caching runner by its function and skipped the task's validation_loss."""
    task = PerMicroBatch("update")
    assert task.update_runner(DataPart(4, 2, 0, 1)) is not None
    got = validated(task, DataPart(4, 2, 0, 1), eval_batches=2)
    assert got["val/loss"] == pytest.approx(plain([torch.arange(s, s + 8, 2) for s in (0, 1, 8, 9)]), rel=1e-6)
    assert Task.validation_update(task, DataPart(4, 2, 0, 1)) is None
