"""`train_step.py --compare-plain`: the trainer and the plain loop do the same work (equal losses, update by
update, for every task), so the ratio of their speeds is the framework's overhead."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare_plain  # noqa: E402


@pytest.mark.parametrize("zero_stage", [1, 0])
@pytest.mark.parametrize("name", compare_plain.TASKS)
def test_trainer_and_plain_loop_compute_the_same_updates(name, zero_stage):
    trainer, _ = compare_plain.trainer_losses(name, micro_batch=4, steps=4, zero_stage=zero_stage)
    plain, _ = compare_plain.plain_losses(name, micro_batch=4, steps=4)
    assert trainer == pytest.approx(plain, rel=1e-5, abs=1e-6)
    assert trainer[-1] != pytest.approx(trainer[0], rel=1e-4), "the updates must change the weights"


def test_one_rank_at_stage_0_skips_the_gradient_allreduce():
    """The skipped all-reduce is exact: the stage-0 rows above match the plain loop with it off."""
    from megadalle.config.train import DeepSpeedConfig
    from megadalle.train import distributed, engine

    task, batch = compare_plain.task_and_batch("clip", 4)
    distributed.init(distributed.detect())
    for stage, reduces in ((0, False), (1, True)):
        built = engine.build(compare_plain.FixedBatch(task, batch), compare_plain.trainer_config(4, 2),
                             DeepSpeedConfig(zero_stage=stage), world_size=1)
        assert built.engine.enable_backward_allreduce is reduces


@pytest.mark.parametrize("stage, dp_world, pipelined, skipped", [(0, 1, False, True), (0, 2, False, False),
                                                                  (0, 1, True, False), (2, 1, False, False)])
def test_only_a_lone_stage_0_rank_skips_it(stage, dp_world, pipelined, skipped):
    from types import SimpleNamespace

    from megadalle.train.engine import skip_lone_allreduce

    engine = SimpleNamespace(enable_backward_allreduce=True)
    assert skip_lone_allreduce(engine, stage, dp_world, pipelined) is skipped
    assert engine.enable_backward_allreduce is not skipped


def test_compare_reports_both_rates_and_their_ratio():
    row = compare_plain.compare("transformer", micro_batch=2, steps=1, warmup=1, rounds=1)
    assert row["ratio"] == pytest.approx(row["trainer_samples_per_s"] / row["plain_samples_per_s"])
    assert "| transformer | 2 | 1 |" in compare_plain.table([row])
