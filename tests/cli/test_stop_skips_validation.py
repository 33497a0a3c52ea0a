"""A stop signal does not wait for the validation (or sample grid) due at the update it stops after: both came
before the save, and at 12B a grid takes minutes the time-limit warning's lead does not cover."""
import json
import os
import shutil
import signal

from megadalle.cli import main
from megadalle.train.loop import Trainer
from megadalle.train.signals import STOPPED_EXIT


def test_a_stop_on_a_validation_step_saves_without_validating(train_overrides, token_data, tmp_path, monkeypatch,
                                                                capsys):
    shards, _ = token_data
    update = Trainer._update

    def signalled_during_the_second(self, runner):
        metrics = update(self, runner)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return metrics

    monkeypatch.setattr(Trainer, "_update", signalled_during_the_second)
    run_dir, val = tmp_path / "run", shutil.copytree(shards, tmp_path / "val")  # not the training folder itself
    assert main(["train", *train_overrides, "trainer.steps=4", "trainer.log_every=1", "trainer.eval_every=1",
                 "trainer.eval_batches=1", f"data.val_shards={val}", f"run_dir={run_dir}"]) == STOPPED_EXIT
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], "val/loss" in r) for r in records] == [(0, True), (1, False)]
    assert (run_dir / "checkpoints" / "latest").read_text() == "step_00000002"
    assert ("stop signal, checkpoint saved at step 2 (the validation due at this update skipped, to save sooner)"
            in capsys.readouterr().out)
