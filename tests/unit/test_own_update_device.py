"""A task's own update (CLIP's gradient caching) reads an update's micro-batches one at a time, each moved to the
device as read: the device holds one micro-batch's data, as the README's gradient accumulation promises."""
import torch

from megadalle.train import steps
from megadalle.train.engine import Built
from megadalle.train.task import DataPart


class OwnUpdateTask:
    """Three micro-batches an update; its own update reads them twice, as gradient caching does, noting how many
    micro-batches had been moved to the device at each read."""

    def __init__(self):
        self.moved, self.moved_at_reads = 0, []

    def batches(self, start_step, part):
        while True:
            yield {"image": torch.zeros(2, 3)}

    def loss_counts(self, batch):
        return {}

    def update_runner(self, part):
        def run(engine, batches, step):
            for _ in range(2):
                for batch in batches:
                    assert batch["image"].dtype == torch.float16  # on the device, in the training dtype
                    self.moved_at_reads.append(self.moved)
            return {"loss": 0.0}
        return run


def test_an_own_update_moves_each_micro_batch_to_the_device_as_it_reads_it(monkeypatch):
    task, to_device = OwnUpdateTask(), steps.to_device

    def counted(value, device, dtype):
        task.moved += isinstance(value, dict)  # a micro-batch (its tensors recurse)
        return to_device(value, device, dtype)

    monkeypatch.setattr(steps, "to_device", counted)
    engine = type("Engine", (), {"get_global_grad_norm": lambda self: None})()
    runner = steps.StepRunner(task, Built(engine, None, None, torch.float16, torch.device("cpu"), 0, 1),
                              DataPart(2, 3, 0, 1), start_step=0)
    assert runner.update(0) == {"loss": 0.0}
    assert task.moved_at_reads == [1, 2, 3, 4, 5, 6]
