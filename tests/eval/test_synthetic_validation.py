"""A `data=synthetic` run that validates (trainer.eval_every) has no held-out split, and says so with the way out."""
import json

import pytest

from megadalle.config.compose import compose
from megadalle.train.loop import train_from_config
from megadalle.train.transformer import FACTORY, task_from_config


@pytest.mark.parametrize("extra", [[], ["data.val_shards=val"]], ids=["no_split", "val_shards_past_preflight"])
def test_a_synthetic_run_that_validates_trains_to_the_end_and_says_why_it_logs_no_val(tmp_path, capsys, extra):
    """The note advised data.val_shards, which crashed the first validation, after training (preflight now refuses
    it: a caller of train_from_config skips preflight and gets the note)."""
    cfg = compose("train", ["data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=2", "trainer.eval_every=1",
                            "trainer.log_every=100", "logger=none", f"run_dir={tmp_path / 'run'}", *extra])
    train_from_config(task_from_config(cfg), cfg, FACTORY)
    out = capsys.readouterr().out
    assert out.count("[train] no validation data for the transformer task (data=synthetic has no held-out split: "
                     "its random tokens are new at every update; set trainer.eval_every=0); val/ metrics are not "
                     "logged") == 1, out
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r][-1] == 1 and not any("val/loss" in r for r in steps)
