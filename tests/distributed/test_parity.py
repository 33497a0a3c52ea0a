"""One process vs ZeRO-1/2/3 and a 2-stage pipeline on gloo processes: the same losses step by step.

Every layout reads the same global batch of 8 per update, as 4 micro-batches of 2: one process
accumulates all 4; ZeRO runs 2 data-parallel ranks accumulating 2 each; the 2-stage pipeline
runs its 4 micro-batches through 2 processes, and with 4 processes as 2 stages x 2 data-parallel
ranks (see DataPart: accumulation step a of rank r reads micro-batch a * ranks + r).
"""
import pytest

import dist_launch as launch

LAYOUTS = {
    "zero1": (2, {"zero_stage": 1, "grad_accum": 2}),
    "zero2": (2, {"zero_stage": 2, "grad_accum": 2}),
    "zero3": (2, {"zero_stage": 3, "grad_accum": 2}),
    "pipe2": (2, {"zero_stage": 1, "pipeline_stages": 2, "grad_accum": 4}),
    "pipe2x2dp": (4, {"zero_stage": 1, "pipeline_stages": 2, "grad_accum": 2}),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    launch.run(1, {"run_dir": str(root / "run"), "grad_accum": 4, "dropout": False}, root / "logs")
    return launch.losses(root / "run")


@pytest.mark.distributed
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_losses_match_single_process(layout, reference, tmp_path):
    world, opts = LAYOUTS[layout]
    launch.run(world, {"run_dir": str(tmp_path / "run"), "dropout": False, **opts}, tmp_path / "logs")
    got = launch.losses(tmp_path / "run")
    assert sorted(got) == sorted(reference) == list(range(6))
    for step, loss in reference.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (layout, step, got, reference)
    assert reference[5] < reference[0] - 0.2, "the toy model must actually learn, or parity proves nothing"
