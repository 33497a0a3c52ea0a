"""The update's totals of a loss count make the mean of micro-batch losses the loss of the whole update."""
import pytest
import torch

from megadalle.models.transformer import Transformer
from megadalle.train.step_totals import MICRO_BATCHES, STEP_TOTALS, per_micro_batch, step_total, with_step_totals
from megadalle.train.task import Task
from megadalle.train.transformer import TEXT_TARGETS, TransformerTask

from .helpers import tiny_config

CPU = torch.device("cpu")


def update_batch(cfg, lengths: list[int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, cfg.text_vocab, (len(lengths), cfg.text_len), generator=g)
    text[torch.arange(cfg.text_len) >= torch.tensor(lengths)[:, None]] = cfg.text_pad_id
    return {"text": text, "image": torch.randint(0, cfg.image_vocab, (len(lengths), cfg.grid_len), generator=g)}


def micro_batches(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    return [{name: value[i:i + size] for name, value in batch.items()} for i in range(0, len(batch["text"]), size)]


def grads(model) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return out


@pytest.mark.parametrize("lengths", [[2, 1, 3, 2, 16, 16, 14, 16],  # 1 to 28 text targets per micro-batch
                                     [2, 1, 1, 1, 0, 1, 1, 1]],  # one target in the update: 1/4 per micro-batch
                         ids=["short_and_long", "one_target"])
def test_mean_of_micro_batch_losses_is_the_whole_update_loss(lengths):
    cfg = tiny_config()
    task = TransformerTask(cfg, None)
    torch.manual_seed(0)
    model = Transformer(cfg)
    whole = update_batch(cfg, lengths)
    expected, parts = model.loss(whole["text"], whole["image"])
    expected.backward()
    expected_grads = grads(model)

    batches = with_step_totals(task, micro_batches(whole, 2), 1, CPU)
    assert {name: int(v) for name, v in batches[0][STEP_TOTALS].items()} == {
        TEXT_TARGETS: sum(max(n - 1, 0) for n in lengths), MICRO_BATCHES: 4}
    results = [task.loss(model, batch, 0) for batch in batches]
    loss = sum(r[0] for r in results) / len(results)  # what DeepSpeed's accumulation averages
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for name in ("text_loss", "image_loss"):  # the metrics the trainer averages over micro-batches
        assert sum(r[1][name] for r in results) / len(results) == pytest.approx(parts[name].item(), rel=1e-6)
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-7, msg=name)

    alone = sum(task.loss(model, batch, 0)[0] for batch in micro_batches(whole, 2)) / 4
    assert alone.item() != pytest.approx(expected.item(), rel=1e-3), "each micro-batch's own mean is not the update's"


def test_an_update_of_empty_captions_has_text_loss_0():
    cfg = tiny_config()
    task = TransformerTask(cfg, None)
    model = Transformer(cfg)
    batches = with_step_totals(task, micro_batches(update_batch(cfg, [0] * 4), 2), 1, CPU)
    assert int(batches[0][STEP_TOTALS][TEXT_TARGETS]) == 0
    for batch in batches:
        loss, metrics = task.loss(model, batch, 0)
        loss.backward()
        assert metrics["text_loss"] == 0.0 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_pipeline_loss_reads_the_totals_from_its_labels():
    cfg = tiny_config()
    task = TransformerTask(cfg, None)
    spec = task.pipeline()
    model = Transformer(cfg)
    batch = with_step_totals(task, micro_batches(update_batch(cfg, [2, 1, 16, 16]), 2), 1, CPU)[0]
    inputs, labels = spec.split(batch)
    assert len(labels) == 4
    assert spec.loss_fn(model(*inputs), labels).item() == pytest.approx(task.loss(model, batch, 0)[0].item(), rel=1e-6)
    plain = {name: value for name, value in batch.items() if name != STEP_TOTALS}
    inputs, labels = spec.split(plain)
    assert spec.loss_fn(model(*inputs), labels).item() == pytest.approx(task.loss(model, plain, 0)[0].item(), rel=1e-6)


def test_a_task_without_loss_counts_gets_its_batches_as_they_are_and_no_collective():
    batches = [{"x": torch.ones(2)}]
    assert with_step_totals(Task(), batches, 2, CPU) is batches  # dp_world 2 without a process group: no all-reduce
    assert step_total(batches[0], TEXT_TARGETS) is None and per_micro_batch(None) is None
