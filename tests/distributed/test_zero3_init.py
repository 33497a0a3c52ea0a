"""ZeRO-3 builds the Transformer inside deepspeed.zero.Init: partitioned as built, initialised as plainly built,
between its forward and backward it keeps no more gathered than train's window of two blocks, and its optimizer
steps in sub-groups of one block with the losses of one step over the whole partition (and of ZeRO-1). Vocabulary
tables cut into pieces (model.vocab_chunk) train under ZeRO-3 as under ZeRO-1.

DeepSpeed keeps parameters below `stage3_param_persistence_threshold` whole on every rank; the
threshold is set to 0 here so the tiny model REALLY partitions (the default would keep all of it).
"""
import json
import math

import pytest

import dist_launch as launch
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.plan import count_parameters

PARTITION = ["+deepspeed.extra.zero_optimization.stage3_param_persistence_threshold=0"]
SMALL_GATHERS = ["+deepspeed.extra.zero_optimization.stage3_max_live_parameters=1000",
                 "+deepspeed.extra.zero_optimization.stage3_prefetch_bucket_size=1000"]
PIECES = ["model.vocab_chunk=100"]
"""The tiny model's 512 text ids in 6 pieces, its 128 image codes in 2, its output matrix in 8."""
RUNS = {"zero1": ["deepspeed=zero1", *SMALL_GATHERS], "zero3": ["deepspeed=zero3", *SMALL_GATHERS],
        "zero3 window": ["deepspeed=zero3"],
        "zero3 deepspeed defaults": ["deepspeed=zero3", "deepspeed.zero3_window_blocks=0",
                                     "deepspeed.zero3_sub_group_blocks=0"],
        "zero1 pieces": ["deepspeed=zero1", *PIECES], "zero3 pieces": ["deepspeed=zero3", *PIECES]}
COMMON = ["model=tiny", "model.dropout=0", "data=synthetic", "trainer=tiny", "trainer.micro_batch=2",
          "trainer.grad_accum=2", "logger=none"]


def build_run(tmp_path_factory, overrides: list[str], common: list[str] = COMMON, verb: str = "train") -> list[dict]:
    out = tmp_path_factory.mktemp("run")
    launch.run(2, {"verb": verb, "overrides": [*common, *overrides, *PARTITION], "out": str(out)}, out / "logs",
               script="dist_build_worker.py")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: build_run(tmp_path_factory, overrides) for name, overrides in RUNS.items()}


def check_each_rank_holds_only_its_share(zero1: list[dict], zero3: list[dict]) -> None:
    assert zero3[0]["shares"].keys() == zero3[0]["stats"].keys()
    for rank in zero3:
        for name, (held, total, materialised) in rank["shares"].items():
            assert held == math.ceil(total / 2), (name, held, total)
            assert materialised == 0, f"{name} is whole on a rank outside a forward"
    whole = sum(n for _, _, n in zero1[0]["stats"].values())
    assert sum(total for _, total, _ in zero3[0]["shares"].values()) == whole
    assert [rank["constructed"] for rank in zero3] == [0, 0], "zero.Init partitions while constructing"
    assert zero1[0]["constructed"] == whole


def check_plain_statistics(plain: dict, zero3: dict) -> None:
    assert plain.keys() == zero3.keys()
    for name, (mean, std, numel) in plain.items():
        z_mean, z_std, z_numel = zero3[name]
        assert z_numel == numel
        assert z_mean == pytest.approx(mean, abs=2e-3), name
        if numel > 1:  # a one-element tensor (CLIP's logit_scale) has no spread
            assert z_std == pytest.approx(std, rel=1e-2, abs=1e-6), name


@pytest.mark.distributed
def test_each_rank_holds_only_its_share(runs):
    check_each_rank_holds_only_its_share(runs["zero1"], runs["zero3"])


@pytest.mark.distributed
def test_zero3_built_model_has_the_plain_statistics(runs):
    check_plain_statistics(runs["zero1"][0]["stats"], runs["zero3"][0]["stats"])
    assert runs["zero3"][0]["stats"]["blocks.0.attn.qkv.weight"][1] == pytest.approx(0.02, rel=0.05), \
        "GPT-2's init, not a default"


@pytest.mark.distributed
def test_same_losses_before_and_after_the_first_step(runs):
    losses = {layout: ranks[0]["losses"] for layout, ranks in runs.items()}
    for layout in ("zero3", "zero3 window", "zero3 deepspeed defaults"):
        assert losses[layout] == pytest.approx(losses["zero1"], rel=1e-5), (layout, losses)
    assert losses["zero3 pieces"] == pytest.approx(losses["zero1 pieces"], rel=1e-5), losses
    assert losses["zero1"][1] != losses["zero1"][0], "update 1 must follow a real step"


@pytest.mark.distributed
def test_optimizer_steps_in_sub_groups_of_one_block(runs):
    """One sub-group per parameter group (decay, no decay) with DeepSpeed's default; one block's worth of
    elements each with train's: the same losses either way (above)."""
    assert [rank["sub_groups"] for rank in runs["zero3 deepspeed defaults"]] == [2, 2]
    assert all(rank["sub_groups"] > 2 for rank in runs["zero3 window"]), [r["sub_groups"] for r in runs["zero3 window"]]


@pytest.mark.distributed
def test_fp32_masters_are_the_weight_partitions(runs):
    """No second fp32 copy of the weights (engine.share_fp32_masters): every group's master is its
    partition's memory, under ZeRO-1 as under ZeRO-3, and the losses after the first step are the same in
    every layout (above)."""
    for layout in ("zero1", "zero1 pieces", "zero3", "zero3 window", "zero3 deepspeed defaults", "zero3 pieces"):
        for rank in runs[layout]:
            assert rank["masters_shared"] and all(rank["masters_shared"]), (layout, rank["masters_shared"])


@pytest.mark.distributed
def test_pieced_tables_are_partitioned_with_the_plain_statistics(runs):
    check_each_rank_holds_only_its_share(runs["zero1 pieces"], runs["zero3 pieces"])
    check_plain_statistics(runs["zero1 pieces"][0]["stats"], runs["zero3 pieces"][0]["stats"])
    assert len([n for n in runs["zero3 pieces"][0]["shares"] if n.startswith("head.out.pieces.")]) == 8


@pytest.mark.distributed
def test_forward_keeps_at_most_the_window_gathered(runs):
    """DeepSpeed's prefetcher runs ahead to stage3_max_live_parameters and keeps what it passed gathered until
    its next use: at its default 1e9 a model this small stays whole from the forward to the backward."""
    counts = count_parameters(build(TransformerConfig, compose("train", COMMON).model, "model"))
    window = 2 * counts.block + counts.largest
    for rank in runs["zero3 window"]:
        assert rank["gathered"] and max(rank["gathered"]) <= window < counts.total / 2, (rank["gathered"], window)
    for rank in runs["zero3 deepspeed defaults"]:
        assert rank["gathered"][0] == 0, "the first forward records the trace and releases all"
        assert max(rank["gathered"][1:]) == counts.total, "DeepSpeed's defaults hold the whole model"


@pytest.mark.distributed
def test_clip_is_built_partitioned_with_the_plain_statistics(tmp_path_factory):
    common = ["clip=tiny", "data.shards=unused", "tokenizer=unused", "trainer=tiny", "logger=none"]
    zero1, zero3 = (build_run(tmp_path_factory, [f"deepspeed={layout}"], common, verb="train-clip")
                    for layout in ("zero1", "zero3"))
    check_each_rank_holds_only_its_share(zero1, zero3)
    check_plain_statistics(zero1[0]["stats"], zero3[0]["stats"])
