"""A NaN loss is skipped (ZeRO's overflow check: weights and schedule untouched), counted, logged, and training goes on."""
import json

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_nan_update_is_skipped_and_counted(tmp_path):
    launch.run(1, {"run_dir": str(tmp_path / "run"), "zero_stage": 2, "steps": 5, "nan_step": 2, "dropout": False},
               tmp_path / "logs")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1, 1]
    assert [r["nonfinite_losses"] for r in records] == [0, 0, 1, 1, 1]
    assert all(r["loss"] == r["loss"] for i, r in enumerate(records) if i != 2)  # finite after the skip
    assert records[3]["lr"] == records[2]["lr"], "the schedule must not advance on a skipped update"
    assert records[4]["loss"] < records[0]["loss"]


def test_a_run_stuck_in_skipped_updates_says_so_in_its_last_line(tmp_path, capsys):
    """Weights that overflow every forward are never changed again (each update is skipped): such a run trained on
    to its end, saved the same weights and said only "finished at step 4"."""
    from megadalle.cli import main

    assert main(["train", "data=synthetic", "model=tiny", "trainer=tiny", "trainer.steps=4", "trainer.lr=1e6",
                 "trainer.min_lr=0", "trainer.warmup_steps=0", "trainer.grad_clip=0", "data.num_workers=0",
                 "logger=none", f"run_dir={tmp_path / 'run'}"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[train] finished at step 4, ") and " of its 4 updates skipped for a non-finite loss " \
        "(metrics.jsonl: skipped_steps): lower trainer.lr, or resume from an earlier checkpoint" in last, last
