"""`megadalle plan`: exact parameter counts, every memory term on hand-computed cases, communication
time, checkpoint size and USR1 lead time, the layout it suggests, and the CLI for any config."""
import dataclasses
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from megadalle.cli import main
from megadalle.config import ConfigError, build, top_level
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.models.transformer import Transformer
from megadalle.plan import (BF16, FP32, GB, Counts, Layout, Settings, budget, checkpoint_bytes,
                            construction_bytes, count_parameters, launch_overrides, layout_for, memory_per_rank,
                            ring_seconds, settings_for, stage_parameters, stage_span, step_time, suggest,
                            usr1_lead_seconds)
from megadalle.plan.report import MEMORY_COLUMNS
from megadalle.plan.settings import MAX_LIVE_DEFAULT, REUSE_DEFAULT

from .hand_sized_model import CFG, COUNTS
from .helpers import tiny_config


def plan_for(*overrides):
    cfg = compose("plan", list(overrides))
    return (build(TransformerConfig, cfg.model, "model"), build(PlanConfig, top_level(cfg, PlanConfig), ""),
            build(TrainerConfig, cfg.trainer, "trainer"), build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"))


def test_count_equals_the_real_tiny_model():
    cfg = tiny_config()
    model = Transformer(cfg)
    counts = count_parameters(cfg)
    assert counts.total == sum(p.numel() for p in model.parameters()) == sum(counts.numels)
    assert counts.block == sum(p.numel() for p in model.blocks[0].parameters())
    assert counts.embed + counts.head + cfg.n_layers * counts.block == counts.total


def test_12b_has_about_12_billion_parameters():
    assert 11.5e9 < count_parameters(plan_for("model=12b")[0]).total < 12.5e9


def test_zero1_bf16_with_ema_and_overlap_by_hand():
    settings = Settings(precision=BF16, ema=True, overlap_comm=True, reduce_bucket=10)
    mem = memory_per_rank(CFG, COUNTS, Layout(1, 4, 1, 2, False, 1), settings)
    assert (mem.weights, mem.optimizer, mem.ema, mem.buffers) == (2 * 950, 12 * 950 / 4, 4 * 950 / 4, 2 * 10 * 4)
    # fp32 gradients, the reduced partition copied to fp32 for the step, one gradient computed before it is added
    assert mem.grads == 4 * 950 + 4 * 950 / 4 + 4 * 150
    per_layer = 34 * 16 * 8  # 34 B per element-layer at 2 B, 16 tokens (8 x micro-batch 2), d_model 8
    assert mem.activations == 4 * per_layer + 2 * 54 * (2 + 4 + 4)


def test_a_validations_ema_swap_counts_where_it_holds_more_than_the_step():
    """The swap backs up this rank's piece of the live weights and gathers one parameter at a time, after the step
    has freed its activations and computed gradients: with one data-parallel rank and checkpointing, the weights'
    backup outweighs those (plan left it out)."""
    big = dataclasses.replace(COUNTS, total=95000, embed=10000, head=5000, block=20000, largest=15000,
                              block_largest=15000, numels=(300, 500, 9200, 5000) + (15000, 5000) * 4, matrices=74200)
    layout, ema = Layout(1, 1, 1, 1, True), Settings(precision=FP32, ema=True, reduce_bucket=10)
    mem = memory_per_rank(CFG, big, layout, ema)
    per_layer = 34 * 4 / 2 * 8 * 8  # fp32: twice the 34 B per element-layer, 8 tokens, d_model 8
    logits = 54 * (4 + 4 + 4)
    assert mem.activations == 4 * 8 * 8 * 4 + per_layer + logits  # each block's input, one block recomputed
    evaluated = 8 * 8 * 4 + per_layer + logits  # one block at a time, no block's input kept
    freed = mem.activations + 4 * 15000  # the activations and the largest gradient as computed
    assert mem.swap == 4 * (95000 + 15000) + evaluated - freed
    assert mem.total == dataclasses.replace(mem, swap=0).total + mem.swap
    assert memory_per_rank(CFG, big, layout, dataclasses.replace(ema, ema=False)).swap == 0
    assert memory_per_rank(CFG, big, Layout(1, 64, 1, 8, False), ema).swap == 0  # the step's transients are larger


def test_zero2_shards_gradients_and_zero3_weights_with_live_and_persistent_parameters():
    settings = Settings(precision=BF16, reduce_bucket=10, prefetch_bucket=30, max_live=100, max_reuse=100,
                        persistence=5)
    zero2 = memory_per_rank(CFG, COUNTS, Layout(1, 4, 2, 1, False), settings)
    zero3 = memory_per_rank(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings)
    # the gradient partition, the largest gradient as computed, and a second tensor above the bucket waiting whole
    assert zero2.grads == zero3.grads == 4 * 950 / 4 + 4 * 150 + 4 * 150
    # the reduce bucket, and the flattened copy of what is reduced: here the 150-element tensor, above the bucket
    assert zero2.weights == 2 * 950 and zero2.buffers == 10 * 4 + 150 * 4
    assert zero3.weights == 2 * 950 / 4
    # gathered: the largest tensor being run, the prefetcher run ahead to max_live, and the small parameters
    assert zero3.buffers == 10 * 4 + 150 * 4 + 2 * ((150 + 100) + (3 + 5))
    layout = Layout(1, 4, 3, 1, False)
    no_prefetch = memory_per_rank(CFG, COUNTS, layout, dataclasses.replace(settings, prefetch_bucket=0))
    assert no_prefetch.buffers == 10 * 4 + 150 * 4 + 2 * ((150 + 100 // 2) + 8)  # what waits within half the reuse
    defaults = dataclasses.replace(settings, max_live=MAX_LIVE_DEFAULT, max_reuse=REUSE_DEFAULT)
    whole = memory_per_rank(CFG, COUNTS, layout, defaults)
    assert whole.buffers == 10 * 4 + 150 * 4 + 2 * (950 + 8)  # DeepSpeed's 1e9 holds a small model whole
    roomy = memory_per_rank(CFG, COUNTS, Layout(1, 4, 2, 1, False), dataclasses.replace(settings, reduce_bucket=200))
    assert roomy.grads == 4 * 950 / 4 + 4 * 150 and roomy.buffers == 2 * 200 * 4  # every tensor fits a bucket


def test_zero3_step_counts_three_copies_of_a_sub_group_beyond_the_backwards_transients():
    big = Counts(total=95_000, embed=10_000, head=5_000, block=20_000, numels=(300, 500, 9_200, 5_000) + (15_000, 5_000) * 4,
                 largest=15_000, block_largest=15_000, matrices=74_200)  # COUNTS x 100: the step can outweigh activations
    settings = Settings(precision=FP32, reduce_bucket=1_000, prefetch_bucket=3_000, max_live=10_000, max_reuse=10_000,
                        persistence=500)
    layout = Layout(1, 4, 3, 1, False)
    whole = memory_per_rank(CFG, big, layout, settings)  # DeepSpeed's 1e12: the whole 95,000 / 4 partition
    # gathered (the largest and the window), computed and waiting gradients, activations
    backward = 4 * (15_000 + 10_000) + 4 * (15_000 + 15_000) + whole.activations
    assert whole.step == 3 * 4 * 95_000 / 4 - backward > 0
    small = memory_per_rank(CFG, big, layout, dataclasses.replace(settings, sub_group=2_000))
    assert small.step == 0 and small.total == whole.total - whole.step  # the backward is the peak
    sub_groups = memory_per_rank(CFG, big, layout, dataclasses.replace(settings, sub_group=18_000))
    assert sub_groups.step == 3 * 4 * (18_000 + 15_000 / 4) - backward  # at most one parameter's partition past it
    assert memory_per_rank(CFG, big, Layout(1, 4, 2, 1, False), settings).step == 0


def test_plan_sets_sub_groups_as_train_does():
    model, plan, trainer, ds = plan_for("deepspeed=zero3")
    counts = count_parameters(model)
    assert settings_for(trainer, ds, plan, counts).sub_group == counts.block
    _, plan, trainer, ds = plan_for("deepspeed=zero3", "+deepspeed.extra.zero_optimization.sub_group_size=7")
    assert settings_for(trainer, ds, plan, counts).sub_group == 7


def test_buffers_never_exceed_the_parameters_they_hold():
    settings = Settings(precision=BF16, reduce_bucket=10_000, prefetch_bucket=10_000, persistence=0)
    zero3 = memory_per_rank(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings)
    # one bucket of all 950 gradients and its flattened copy, all 950 weights gathered
    assert zero3.buffers == 2 * 950 * 4 + 950 * 2


def test_checkpointing_keeps_layer_inputs_and_one_recomputed_layer():
    mem = memory_per_rank(CFG, COUNTS, Layout(1, 1, 0, 1, True), Settings(precision=BF16))
    assert mem.activations == 4 * 8 * 8 * 2 + 34 * 8 * 8 + 54 * 10


def test_pipeline_first_stage_holds_micro_batches_in_flight():
    layout = Layout(2, 2, 1, 1, True, 4)
    mem = memory_per_rank(CFG, COUNTS, layout, Settings(precision=BF16))
    stage0 = 2 * 200 + 100  # two blocks and the embeddings; the last stage has 2 blocks + head = 450
    assert (mem.weights, mem.grads, mem.optimizer) == (2 * stage0, 4 * stage0 + 4 * stage0 / 2 + 4 * 150, 12 * stage0 / 2)
    assert mem.activations == 2 * (2 * 8 * 8 * 2 + 34 * 8 * 8)  # 2 micro-batches in flight, no logits on stage 0


def test_cpu_fp32_counts_fp32_activations_and_no_attention_scores():
    """plan added every layer's seq^2 scores and probabilities on the CPU, which torch's CPU attention never keeps:
    `model=small` predicted 5.78 GB above the baseline where 3.54 GB was measured."""
    fp32 = Settings(precision=FP32)
    mem = memory_per_rank(CFG, COUNTS, Layout(1, 1, 0, 1, False), fp32, device="cpu")
    assert mem.optimizer == 8 * 950  # no fp32 master copy beside fp32 weights without ZeRO
    per_layer = 68 * 8 * 8 + 8 * 8 * 4  # 2x Korthikanti's 16-bit bytes + the additive fp32 mask
    assert mem.activations == 4 * per_layer + 54 * (4 + 4 + 4)
    # nor with ZeRO: the master is the weights' partition (engine.share_fp32_masters)
    assert memory_per_rank(CFG, COUNTS, Layout(1, 4, 1, 1, False), fp32, "cpu").optimizer == 8 * 950 / 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cpu_attention_the_model_trains_with_keeps_no_scores_for_its_backward(dtype):
    """What the count above rests on: the CPU reference path (SDPA with the layer's boolean mask) saves q, k, v, its
    output, the mask (made additive, in their dtype) and an fp32 row statistic per head, not the [heads, seq, seq]
    scores and probabilities a math kernel would."""
    from megadalle.attention.dispatch import reference_attention
    from megadalle.attention.masks import MaskSpec

    heads, seq, width = 4, 1280, 64
    q, k, v = (torch.randn(1, heads, seq, width, dtype=dtype, requires_grad=True) for _ in range(3))
    saved = {}

    def keep(t):
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        reference_attention(q, k, v, MaskSpec("row", 256, 32, 32))
    assert sum(saved.values()) == 4 * q.numel() * dtype.itemsize + seq * seq * dtype.itemsize + heads * seq * 4


def test_construction_is_the_share_plus_the_largest_tensor_under_zero3():
    settings = Settings(precision=FP32)
    zero3 = construction_bytes(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings)
    zero1 = construction_bytes(CFG, COUNTS, Layout(1, 4, 1, 1, False), settings)
    assert zero3 == 4 * 950 / 4 + 4 * 950 / 4 + 4 * 950 / 4 + 4 * 150  # weights, master, gradient partition, largest
    # gloo stages an all-gather's output in a second buffer: the largest tensor, gathered whole, is held twice
    assert construction_bytes(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings, "cpu") == zero3 + 4 * 150
    gpu, cpu = (memory_per_rank(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings, d) for d in ("gpu", "cpu"))
    assert cpu.buffers == gpu.buffers + 4 * 150
    # ZeRO-1 flattens the decay group (742 elements) with a copy while its tensors still exist: that
    # transient is above the weights plus master and gradient partitions (Adam's moments come at the first step).
    assert zero1 == 4 * 950 + 4 * 742 > 4 * 950 + 4 * 950 / 4 + 4 * 950 / 4
    zero1_dp1 = construction_bytes(CFG, COUNTS, Layout(1, 1, 1, 1, False), settings)
    assert zero1_dp1 == 4 * 950 + 4 * 950 + 4 * 950  # one rank: the whole master and gradient copies are larger


def test_fp32_zero_trains_without_a_master_copy_but_builds_and_saves_one():
    """engine.share_fp32_masters frees DeepSpeed's fp32 clone once the engine is built, at every ZeRO stage:
    the step holds the weights' partition and Adam's moments only; the constructor allocated the clone,
    checkpoints write it."""
    fp32, bf16 = Settings(precision=FP32), Settings(precision=BF16)
    zero3, zero2 = Layout(1, 4, 3, 1, False), Layout(1, 4, 2, 1, False)
    assert memory_per_rank(CFG, COUNTS, zero3, fp32).optimizer == 8 * 950 / 4
    assert memory_per_rank(CFG, COUNTS, zero2, fp32).optimizer == 8 * 950 / 4
    assert memory_per_rank(CFG, COUNTS, Layout(1, 4, 1, 1, False), fp32).optimizer == 8 * 950 / 4
    assert memory_per_rank(CFG, COUNTS, zero2, bf16).optimizer == 12 * 950 / 4
    assert memory_per_rank(CFG, COUNTS, zero3, bf16).optimizer == 12 * 950 / 4  # a bf16 partition cannot be the master
    assert construction_bytes(CFG, COUNTS, zero3, fp32) == 3 * 4 * 950 / 4 + 4 * 150
    assert checkpoint_bytes(CFG, COUNTS, zero3, fp32)[0] == 12 * 950 / 4


def test_counts_split_matrices_from_one_dimensional_parameters():
    cfg = tiny_config()
    model = Transformer(cfg)
    assert count_parameters(cfg).matrices == sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def test_checkpoint_bytes_per_rank_and_in_all():
    settings = Settings(precision=BF16, ema=True)
    busiest, total = checkpoint_bytes(CFG, COUNTS, Layout(1, 4, 1, 1, False), settings)
    assert busiest == 16 * 950 / 4 + 2 * 950 and total == 16 * 950 + 2 * 950
    busiest, total = checkpoint_bytes(CFG, COUNTS, Layout(1, 4, 3, 1, False), settings)
    assert busiest == 16 * 950 / 4 and total == 16 * 950
    busiest, _ = checkpoint_bytes(CFG, COUNTS, Layout(2, 2, 1, 1, False), settings)
    assert busiest == 16 * 500 / 2 + 2 * 500


def test_usr1_lead_covers_a_step_and_the_write_with_margin():
    plan = PlanConfig(checkpoint_write_gbps=5.0)
    assert usr1_lead_seconds(10.0, 100 * GB, plan) == 80  # 1.5 x (10 + 20) + 30 = 75, rounded up to 10 s
    assert usr1_lead_seconds(0.0, 0.0, plan) == 30


def test_ring_collectives_use_nvlink_inside_a_node_and_infiniband_across():
    plan = PlanConfig(gpus_per_node=8, nvlink_gbps=400.0, ib_gbps=50.0)
    assert ring_seconds(8 * GB, 8, plan) == pytest.approx(7 / 400)
    assert ring_seconds(8 * GB, 16, plan) == pytest.approx(8 * 15 / 16 / 50)
    assert ring_seconds(8 * GB, 1, plan) == 0


def test_step_time_communication_per_zero_stage_and_overlap():
    model, plan, _, _ = plan_for("model=1b", "gpus=16")
    counts = count_parameters(model)
    plain, overlapped = Settings(precision=BF16), Settings(precision=BF16, overlap_comm=True)
    reduce, gather = ring_seconds(4 * counts.total, 16, plan), ring_seconds(2 * counts.total, 16, plan)
    one = step_time(model, counts, plan, Layout(1, 16, 1, 1, False, 4), plain)
    assert one.comm == pytest.approx(reduce + gather) and one.exposed == one.comm
    two = step_time(model, counts, plan, Layout(1, 16, 2, 1, False, 4), overlapped)
    assert two.comm == pytest.approx(4 * reduce + gather)
    assert two.exposed == pytest.approx(max(two.comm - two.compute * 2 / 3, 0))
    three = step_time(model, counts, plan, Layout(1, 16, 3, 1, True, 4), overlapped)
    # forward and backward: a block stays gathered from its recomputation to its backward
    assert three.comm == pytest.approx(4 * (2 * gather + reduce)) and three.compute == pytest.approx(one.compute * 4 / 3)
    short = dataclasses.replace(overlapped, max_reuse=2 * counts.block - 1)  # recomputed, released, gathered again
    assert step_time(model, counts, plan, Layout(1, 16, 3, 1, True, 4), short).comm == \
        pytest.approx(4 * (3 * gather + reduce))
    assert step_time(model, counts, plan, Layout(1, 16, 3, 1, False, 4), short).comm == \
        pytest.approx(4 * (2 * gather + reduce))


def test_settings_follow_the_train_config_and_deepspeed_extra():
    model, plan, trainer, ds = plan_for("deepspeed=zero3", "trainer.ema=0.99",
                                        "+deepspeed.extra={zero_optimization: {reduce_bucket_size: 7, "
                                        "stage3_param_persistence_threshold: 0, stage3_max_reuse_distance: 9}}")
    counts = count_parameters(model)
    settings = settings_for(trainer, ds, plan, counts)
    assert (settings.precision, settings.ema, settings.overlap_comm, settings.reduce_bucket, settings.persistence) == \
        (BF16, True, True, 7, 0)
    assert (settings.max_live, settings.max_reuse) == (2 * counts.block, 9)  # train's window; extra wins
    cpu = settings_for(trainer, ds, dataclasses.replace(plan, device="cpu"), counts)
    assert cpu.precision == FP32 and cpu.runtime == 0
    _, plan, trainer, ds = plan_for("deepspeed=pipe", "deepspeed.grad_accum_dtype=bf16")
    assert settings_for(trainer, ds, plan, counts).precision.grad == 2  # bf16 accumulation
    _, plan, trainer, ds = plan_for("deepspeed=zero3", "deepspeed.zero3_window_blocks=0")
    assert (settings_for(trainer, ds, plan, counts).max_live, settings_for(trainer, ds, plan, counts).max_reuse) == \
        (MAX_LIVE_DEFAULT, REUSE_DEFAULT)


def test_pipelines_never_overlap_so_one_reduce_bucket_and_all_communication_exposed():
    model, plan, _, _ = plan_for("model=1b", "gpus=16")
    counts, settings = count_parameters(model), Settings(precision=BF16, overlap_comm=True, reduce_bucket=10)
    pipe = Layout(2, 8, 1, 1, False, 4)
    assert memory_per_rank(model, counts, pipe, settings).buffers == 10 * 4
    t = step_time(model, counts, plan, pipe, settings)
    assert t.exposed == t.comm > 0


def test_headroom_below_ten_percent_is_refused():
    with pytest.raises(ConfigError, match="headroom=0.05"):
        plan_for("headroom=0.05")


def test_12b_suggestion_for_64_x_80gb_fits_with_headroom_and_ema():
    model, plan, trainer, ds = plan_for("model=12b", "gpus=64", "gpu_mem_gb=80")
    counts = count_parameters(model)
    settings = settings_for(trainer, ds, plan, counts)
    assert settings.ema
    best = suggest(model, plan, counts, settings)
    assert best.pipeline * best.data_parallel == 64
    assert best.micro_batch * best.grad_accum * best.data_parallel == plan.global_batch
    assert memory_per_rank(model, counts, best, settings).total <= 0.9 * 80 * GB == budget(plan)


@pytest.mark.parametrize("gpus,mem", [(64, 80), (16, 40), (32, 16), (8, 80)])
def test_suggested_launch_overrides_compose_into_a_valid_train_config(gpus, mem):
    model, plan, trainer, ds = plan_for("model=12b", f"gpus={gpus}", f"gpu_mem_gb={mem}")
    counts = count_parameters(model)
    best = suggest(model, plan, counts, settings_for(trainer, ds, plan, counts))
    cfg = compose("train", ["model=12b", *launch_overrides(best).split()])
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    ds = build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    assert trainer.micro_batch * trainer.grad_accum * best.data_parallel == plan.global_batch
    assert (ds.pipeline_stages, ds.zero_stage) == (best.pipeline, best.zero)


def test_cli_prints_the_given_config_and_a_suggestion(capsys):
    assert main(["plan", "model=12b", "gpus=64", "gpu_mem_gb=80", "deepspeed=zero3", "trainer.micro_batch=2"]) == 0
    out = capsys.readouterr().out
    assert "12.29B" in out and "this config (64 ranks, bf16, EMA on): ZeRO-3 (dp 64), micro-batch 2 x 1" in out
    assert "sbatch --signal=B:USR1@" in out and "suggested layout:" in out and "pipeline 8 x dp 8" in out


def test_cli_cpu_mode_predicts_host_memory_without_a_suggestion(capsys):
    assert main(["plan", "model=tiny", "gpus=4", "device=cpu", "deepspeed=pipe", "trainer.ema=null"]) == 0
    out = capsys.readouterr().out
    assert "this config (4 ranks, fp32, EMA off): pipeline 2 x dp 2 (ZeRO-1)" in out
    assert "host memory per rank above the baseline" in out and "suggested layout" not in out
    # a GPU's step time (0.00 s, NVLink) and a USR1 lead sized on it were printed for CPU runs of 30 s a step
    assert "step: not predicted on the CPU" in out and "NVLink" not in out
    assert "--signal=B:USR1@N, N = 1.5 x (step_seconds + " in out


@pytest.mark.parametrize("overrides, hinted", [
    (["device=cpu", "gpus=4", "deepspeed.pipeline_stages=4"], True),  # fp32, one data-parallel rank
    (["device=cpu", "gpus=4", "deepspeed.pipeline_stages=2"], False),  # dp 2: ZeRO-1 shards the optimizer
    (["device=cpu", "gpus=4", "deepspeed.pipeline_stages=4", "deepspeed.zero_stage=0"], False),
    (["gpus=4", "deepspeed.pipeline_stages=4"], False),  # bf16 accumulated in fp32 needs ZeRO >= 1
    (["gpus=4", "deepspeed.pipeline_stages=4", "deepspeed.grad_accum_dtype=bf16"], True)])
def test_one_data_parallel_rank_is_told_what_stage_0_would_hold(overrides, hinted, capsys):
    assert main(["plan", "model=tiny", "deepspeed=pipe", "trainer.ema=null", *overrides]) == 0
    out = capsys.readouterr().out
    assert ("ZeRO-1 shards nothing here; deepspeed.zero_stage=0 needs" in out) == hinted
    if hinted:  # the figure is the prediction for stage 0 itself
        alone = main(["plan", "model=tiny", "deepspeed=pipe", "trainer.ema=null", *overrides, "deepspeed.zero_stage=0"])
        total = capsys.readouterr().out.split("as configured")[1].split()[len(MEMORY_COLUMNS)]  # the column after them
        assert alone == 0 and f"needs {total} GB per rank" in out


REFUSED_BF16 = ("deepspeed.grad_accum_dtype='fp32': DeepSpeed cannot accumulate bf16 gradients in fp32 at "
                "deepspeed.zero_stage=0; use zero_stage>=1 or deepspeed.grad_accum_dtype=bf16")


@pytest.mark.parametrize("verb", ["plan", "train"])
def test_a_bf16_layout_deepspeed_cannot_run_is_refused_by_plan_as_by_train(verb, tmp_path, capsys):
    """plan said "fits" of ZeRO-0 in bf16 accumulating in fp32 (the default), which train refused, and train refused
    it only once its process group had started."""
    given = ["model=tiny", "deepspeed.zero_stage=0", "trainer.precision=bf16"]
    if verb == "train":
        given += ["data=synthetic", "trainer=tiny", "logger=none", f"run_dir={tmp_path / 'run'}"]
    assert main([verb, *given]) == 2
    assert capsys.readouterr().err.strip() == f"megadalle {verb}: {REFUSED_BF16}"
    assert not (tmp_path / "run").exists()
    assert main(["plan", *given[:2], "trainer.precision=bf16", "deepspeed.grad_accum_dtype=bf16"]) == 0


REHEARSAL_151M = ["model=12b", "model.d_model=1024", "model.n_heads=16", "model.n_layers=8", "model.text_len=64",
                 "model.grid_size=8", "gpus=4", "device=cpu", "deepspeed=zero3", "trainer.precision=fp32",
                 "trainer.micro_batch=1", "trainer.ema=null"]
"""The rehearsal's 151M model, whose 25M-element output matrix outweighs its blocks' 4M-element matrices."""


def test_tables_larger_than_a_blocks_matrices_are_told_what_pieces_would_hold(capsys):
    assert main(["plan", *REHEARSAL_151M]) == 0
    out = capsys.readouterr().out
    assert "the vocabulary tables are the largest tensors (25,165,824 elements, a block's largest 4,194,304): " \
           "model.vocab_chunk=4096 needs" in out
    assert main(["plan", *REHEARSAL_151M, "model.vocab_chunk=4096"]) == 0
    pieced = capsys.readouterr().out
    total = pieced.split("as configured")[1].split()[len(MEMORY_COLUMNS)]
    assert f"model.vocab_chunk=4096 needs {total} GB per rank" in out and "vocabulary tables" not in pieced


def test_impossible_request_is_refused_with_a_reason(capsys):
    assert main(["plan", "model=12b", "gpus=2", "gpu_mem_gb=16"]) == 1
    err = capsys.readouterr().err  # on stderr, as every refusal: it went to stdout, and stderr was empty
    assert err.startswith("megadalle plan: impossible: ") and "do not fit on 2 x 16 GB" in err
    assert main(["plan", "model=12b", "gpus=1000"]) == 1  # fits by memory; the batch of 1024 does not split
    assert "no layout of 1000 GPUs splits global_batch=1024" in capsys.readouterr().err
    assert main(["plan", "model=12b", "gpus=1000", "global_batch=1000"]) == 0
    capsys.readouterr()


def test_a_config_that_contradicts_itself_is_a_user_error(capsys):
    """Config errors exit 2 with one line on stderr, as every verb's do; 'impossible' (exit 1) is plan's answer that
    a consistent request cannot fit."""
    assert main(["plan", "model=tiny", "gpus=3", "deepspeed=pipe"]) == 2
    assert capsys.readouterr().err == "megadalle plan: deepspeed.pipeline_stages=2: does not divide gpus=3 (each " \
                                      "pipeline takes as many ranks as it has stages)\n"
    assert main(["plan", "model=tiny", "gpus=8", "runtime_gb=100"]) == 2
    assert "megadalle plan: runtime_gb=100: the CUDA context and NCCL leave nothing" in capsys.readouterr().err


def test_bad_plan_value_is_named(capsys):
    assert main(["plan", "gpus=0"]) == 2
    assert "gpus=0: must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("partition", ["type:Block", "parameters", "uniform"])
def test_pipeline_stages_cover_the_model_once_under_every_partition(partition):
    for pipeline in (1, 2, 3, 4):
        spans = [stage_span(COUNTS, CFG, pipeline, s, partition) for s in range(pipeline)]
        assert sum(span.blocks for span in spans) == CFG.n_layers
        assert [span.embed for span in spans].count(True) == [span.head for span in spans].count(True) == 1
        assert spans[0].embed and spans[-1].head
        assert sum(stage_parameters(COUNTS, CFG, pipeline, s, partition) for s in range(pipeline)) == COUNTS.total


@pytest.mark.parametrize("partition,empty", [("type:Block", "stages 0, 5, 6, 7 with no Transformer block "
                                                                "(model.n_layers=4)"),
                                              ("uniform", "stages 6, 7 with no layer (model.n_layers=4 blocks, the "
                                                          "embedding and the head)")])
def test_a_pipeline_deeper_than_its_layers_is_refused_with_the_most_stages_that_fill_it(partition, empty, capsys):
    """8 stages of the tiny model's 4 blocks were planned as fitting: DeepSpeed's cut leaves stages without a block
    (type:Block) or without any layer (uniform), ranks with nothing to train."""
    argv = ["plan", "model=tiny", "gpus=8", "deepspeed=pipe", "deepspeed.pipeline_stages=8",
            f"deepspeed.partition_method={partition}"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"megadalle plan: deepspeed.pipeline_stages=8: partition_method={partition} " \
                                      f"leaves {empty}; at most 4 stages fill it and divide gpus=8: set " \
                                      f"deepspeed.pipeline_stages=4\n"
    assert main([*argv[:-2], "deepspeed.pipeline_stages=4", argv[-1]]) == 0
    assert "fits" in capsys.readouterr().out


def test_plan_cuts_the_stages_where_the_training_pipeline_does():
    """plan's stages are those PipelineModule builds from the training task's layers, for every partition."""
    from deepspeed.pipe import PipelineModule
    from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

    from megadalle.train.transformer import TransformerTask

    counts = count_parameters(CFG)
    layers = TransformerTask(CFG, None).pipeline().layers
    for partition in ("type:Block", "parameters", "uniform"):
        for pipeline in (2, 3, 5, 6):
            module = PipelineModule.__new__(PipelineModule)
            module.__dict__.update(num_stages=pipeline, global_rank=1, _layer_specs=layers,
                                   _topo=PipeDataParallelTopology(num_pp=pipeline, num_dp=1))
            module._set_bounds = lambda start, stop: None
            module._partition_layers(partition)
            spans = [stage_span(counts, CFG, pipeline, s, partition) for s in range(pipeline)]
            blocks = [sum(1 for spec in layers[a:b] if spec.typename.__name__ == "Block")
                      for a, b in zip(module.parts, module.parts[1:])]
            assert [span.blocks for span in spans] == blocks, (partition, pipeline)


def test_parameters_partition_balances_the_embeddings_and_head_with_the_blocks():
    # embed 100, blocks 200 each, head 50 over 3 stages: [embed, 1 block] 300, [2 blocks] 400, [1 block, head] 250
    assert [stage_parameters(COUNTS, CFG, 3, s, "parameters") for s in range(3)] == [300, 400, 250]
    by_block = [stage_parameters(COUNTS, CFG, 3, s) for s in range(3)]
    assert by_block == [500, 200, 250]  # type:Block: 2 + 1 + 1 blocks, the first with the embeddings
    balanced = Layout(3, 1, 1, 1, False, 1, "parameters")
    assert memory_per_rank(CFG, COUNTS, balanced, Settings(precision=FP32)).weights == 4 * 400
    assert "deepspeed.partition_method=parameters" in launch_overrides(balanced)


def test_unmodelled_partition_method_is_refused_by_name():
    model, plan, trainer, ds = plan_for("deepspeed=pipe", "deepspeed.partition_method=type:Embed")
    with pytest.raises(ConfigError, match="partition_method='type:Embed': plan models type:Block, parameters, uniform"):
        layout_for(model, trainer, ds, plan)


@pytest.mark.parametrize("gpu_mem_gb,batch", [(80, 34), (40, 7)])
def test_plan_says_which_sampling_batch_fits_one_gpu(gpu_mem_gb, batch):
    """The 12B by hand: 2 bytes per parameter; per sample 2 (k, v) x 2 bytes x 3968 x (64 layers x 1280 positions
    + the image keys each layer gathers); what is left of the usable memory after the runtime and the weights."""
    from megadalle.attention import MaskSpec
    from megadalle.plan.sampling import sampling_batch, sampling_line
    from megadalle.sampling.decoder import image_key_table
    from megadalle.sampling.memory import decoder_bytes

    model, plan, _, _ = plan_for("model=12b", f"gpu_mem_gb={gpu_mem_gb}")
    counts = count_parameters(model)
    gathered = {kind: image_key_table(MaskSpec(kind, 256, 32, 32, model.conv_kernel, model.conv_wrap), "cpu")[0]
                .shape[1] for kind in ("row", "column", "conv")}
    assert gathered == {"row": 33, "column": 32, "conv": gathered["conv"]}
    layers = 47 * 33 + 16 * 32 + gathered["conv"]
    per_sample = 2 * 2 * 3968 * (64 * 1280 + layers)
    assert decoder_bytes(model, 1, torch.bfloat16) == per_sample
    weights, got_per_sample, got_batch = sampling_batch(model, counts, plan)
    assert weights == 2 * counts.total and got_per_sample == per_sample
    assert got_batch == batch == int((gpu_mem_gb * 0.9 * GB - 2 * GB - weights) // per_sample)
    assert ("default 32 fits" in sampling_line(model, counts, plan)) == (batch >= 32)


def test_the_launch_line_carries_deepspeed_extra_through_a_shell(capsys):
    """It printed `deepspeed.extra={zero_optimization:{a:1,b:2}}`: refused by train (its keys are in no struct), and
    split in two by bash's brace expansion. A value with a space or a list is quoted for the shell."""
    extra = ["+deepspeed.extra.zero_optimization.reduce_bucket_size=100000000",
             "+deepspeed.extra.zero_optimization.overlap_comm=false", "+deepspeed.extra.comms_logger.prof_ops=[a,b]",
             "+deepspeed.extra.comms_logger.note='a b'"]
    assert main(["plan", "model=1b", "gpus=8", *extra]) == 0
    line = capsys.readouterr().out.split("launch with: megadalle train ", 1)[1].splitlines()[0]
    argv = subprocess.run(["bash", "-c", f"printf '%s\\n' {line}"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    cfg = compose("train", argv)
    assert OmegaConf.to_container(cfg.deepspeed.extra) == {
        "zero_optimization": {"reduce_bucket_size": 100000000, "overlap_comm": False},
        "comms_logger": {"prof_ops": ["a", "b"], "note": "a b"}}
    assert main(["train", *argv, "--help"]) == 0  # the CLI's own checks take it too


def test_the_printed_launch_line_trains_what_was_planned(capsys):
    """The launch line left out model= (plan's default is 12b, train's tiny: it trained the tiny model) and the
    user's overrides, and its sbatch line left the script's 2 x 8 ranks to set the world size (and batch)."""
    assert main(["plan", "gpus=12", "gpus_per_node=8", "trainer.ema=null", "model.n_layers=40",
                 "deepspeed.timeout_minutes=90"]) == 0
    out = capsys.readouterr().out
    printed = out.split("launch with: megadalle train ", 1)[1].splitlines()[0].split()
    model, plan, trainer, ds = plan_for("gpus=12", "trainer.ema=null", "model.n_layers=40")
    counts = count_parameters(model)
    best = suggest(model, plan, counts, settings_for(trainer, ds, plan, counts))
    cfg = compose("train", printed)
    trained = build(TransformerConfig, cfg.model, "model")
    assert dataclasses.replace(trained, activation_checkpointing=model.activation_checkpointing) == model
    assert (cfg.trainer.ema, cfg.deepspeed.timeout_minutes) == (None, 90)
    assert cfg.trainer.micro_batch * cfg.trainer.grad_accum * 12 // cfg.deepspeed.pipeline_stages == plan.global_batch
    assert (cfg.deepspeed.pipeline_stages, cfg.deepspeed.zero_stage) == (best.pipeline, best.zero)
    assert "sbatch --nodes=2 --ntasks=12 --gpus-per-node=8 --signal=B:USR1@" in out
    assert f"launch/slurm/train.sbatch {' '.join(printed)} ...)" in out
    main(["plan", "gpus=64"])
    assert "sbatch --nodes=8 --ntasks-per-node=8 --gpus-per-node=8 --signal" in capsys.readouterr().out


@pytest.mark.parametrize("gpus, sequences, why", [
    (64, 1024, ""), (12, 1020, " (12 ranks x 85: global_batch=1024 is not a multiple of 12)"),
    (2048, 2048, " (2048 ranks x 1: more ranks than global_batch=1024)")])
def test_the_other_layouts_header_states_the_batch_of_its_rows(gpus, sequences, why, capsys):
    """It printed global_batch above rows of `gpus` x max(global_batch // gpus, 1) sequences: 1024 above ZeRO
    rows of dp 2048 x 1, and above 12 x 85 = 1020."""
    assert main(["plan", f"gpus={gpus}"]) == 0
    out = capsys.readouterr().out
    assert f"other layouts at micro-batch 1 with activation checkpointing, {sequences} sequences per step{why}:\n" \
        in out
