"""model.activation_checkpointing in every mode: the same losses with and without recomputation.

Under a pipeline the blocks are recomputed one at a time with torch's non-reentrant checkpoint and
the embedding stays out of the checkpointed spans (DeepSpeed's reentrant checkpoint over stage 0's
integer token inputs used to crash its backward, and the other stage then hung).
"""
import json

import pytest

import dist_launch as launch

COMMON = ["model=tiny", "data=synthetic", "trainer=tiny", "trainer.steps=3", "trainer.micro_batch=2",
          "trainer.grad_accum=2", "trainer.precision=fp32", "logger=none"]


def losses(tmp_path, layout: str, checkpointing: bool) -> tuple[dict[int, float], list[dict]]:
    root = tmp_path / f"{layout}-{checkpointing}"
    overrides = [*COMMON, f"deepspeed={layout}", f"model.activation_checkpointing={checkpointing}",
                 f"run_dir={root / 'run'}"]
    launch.run(2, {"overrides": overrides, "probe": str(root / "probe.pt"), "record_checkpointing": True},
               root / "logs", script="dist_train_worker.py")
    stages = [json.loads(p.read_text()) for p in sorted(root.glob("probe.pt.rank*.json"))]
    return launch.losses(root / "run"), stages


@pytest.mark.distributed
@pytest.mark.parametrize("layout", ["pipe", "zero2"])
def test_checkpointing_keeps_the_losses(layout, tmp_path):
    (plain, _), (recomputed, stages) = losses(tmp_path, layout, False), losses(tmp_path, layout, True)
    if layout == "pipe":
        spans = [dict(zip(stage["layers"], stage["recomputed"])) for stage in stages]
        assert len(spans) == 2 and spans[0]["PipeEmbed"] is False and spans[1]["Head"] is False
        assert all(stage["recomputed"] == [name == "Block" for name in stage["layers"]] for stage in stages)
    assert sorted(plain) == sorted(recomputed) == [0, 1, 2]
    for step, loss in plain.items():
        assert recomputed[step] == pytest.approx(loss, rel=1e-5), (layout, step, plain, recomputed)
