"""`megadalle plan`'s pipeline, checkpoint and step-time terms against values worked out by hand.

Each is a factor a layout choice turns on (1F1B's micro-batches in flight, which ZeRO stage writes the weights
whole, the pipeline bubble, ZeRO-0's all-reduce): dropping one leaves every other plan test passing while the
suggested layout and its predicted memory, checkpoint size or step time drift.
"""
import pytest

from megadalle.config.plan import PlanConfig
from megadalle.plan import BF16, FP32, GB, Layout, Settings, checkpoint_bytes, count_parameters, memory_per_rank, \
    stage_memory, step_time

from .hand_sized_model import CFG, COUNTS
from .three_by_three_model import CFG as FLOPS_CFG

ACTIVATIONS_PER_BLOCK = 34 * 8 * 8
"""One micro-batch of 1 sequence (8 tokens, d_model 8) through one block at bf16: Korthikanti's 34 B per element."""


def test_1f1b_keeps_no_more_micro_batches_in_flight_than_the_step_has():
    """Stage s of a 1F1B pipeline holds the activations of min(stages - s, micro-batches) forwards (DeepSpeed's
    TrainSchedule.num_pipe_buffers): with 4 stages and 2 micro-batches per step, stage 0 never runs ahead by 4."""
    bf16 = Settings(precision=BF16)
    layout = Layout(4, 1, 1, 1, False, 2)  # one block per stage; stage 0 has the embeddings, stage 3 the head
    in_flight = [stage_memory(CFG, COUNTS, layout, bf16, s, "gpu").activations for s in range(4)]
    assert in_flight == [2 * ACTIVATIONS_PER_BLOCK, 2 * ACTIVATIONS_PER_BLOCK, 2 * ACTIVATIONS_PER_BLOCK,
                         ACTIVATIONS_PER_BLOCK + 54 * (2 + 4 + 4)]  # the last: one micro-batch and its logits
    assert memory_per_rank(CFG, COUNTS, layout, bf16).activations == 2 * ACTIVATIONS_PER_BLOCK
    many = Layout(4, 1, 1, 1, False, 8)  # enough micro-batches: each stage holds as many as stages follow it
    assert [stage_memory(CFG, COUNTS, many, bf16, s, "gpu").activations for s in range(3)] == \
        [4 * ACTIVATIONS_PER_BLOCK, 3 * ACTIVATIONS_PER_BLOCK, 2 * ACTIVATIONS_PER_BLOCK]


def test_zero2_checkpoints_write_the_weights_whole_beside_each_ranks_optimizer_partition():
    """ZeRO-2 partitions gradients and optimizer state, not the weights: DeepSpeed's first data-parallel rank writes
    the module's state whole (engine.save_non_zero_checkpoint); only ZeRO-3's files hold no whole weights."""
    busiest, total = checkpoint_bytes(CFG, COUNTS, Layout(1, 4, 2, 1, False), Settings(precision=BF16, ema=True))
    # bf16 weights whole on rank 0, and its quarter of the fp32 master (4 B), Adam's moments (8 B) and the EMA (4 B)
    assert busiest == 2 * 950 + (4 + 8 + 4) * 950 / 4
    assert total == 2 * 950 + (4 + 8 + 4) * 950
    busiest, _ = checkpoint_bytes(CFG, COUNTS, Layout(1, 4, 2, 1, False), Settings(precision=FP32))
    assert busiest == 4 * 950 + (4 + 8) * 950 / 4  # fp32: the weights whole, and the master checkpoints still write


def test_a_pipeline_of_4_stages_and_3_micro_batches_takes_twice_the_compute():
    """1F1B's bubble: (stages - 1) micro-batch slots idle beside grad_accum busy ones, so 4 stages over 3
    micro-batches take (3 + 3) / 3 = 2x the compute of the same batch without a pipeline."""
    plan = PlanConfig(gpus=4, peak_tflops=100.0, assumed_mfu=0.5)
    counts, settings = count_parameters(FLOPS_CFG), Settings(precision=BF16)
    pipe = step_time(FLOPS_CFG, counts, plan, Layout(4, 1, 1, 4, False, 3), settings)  # 4 x 3 = 12 sequences
    flat = step_time(FLOPS_CFG, counts, plan, Layout(1, 4, 1, 1, False, 3), settings)  # 1 x 3 x 4 ranks = 12
    # 3 x 5176 FLOPs per token (tests/unit/test_flops_by_hand.py) x 12 tokens x 12 sequences over 4 GPUs at 50 TFLOP/s
    no_bubble = 3 * 5176 * 12 * 12 / (4 * 100e12 * 0.5)
    assert flat.compute == pytest.approx(no_bubble, rel=1e-12)
    assert pipe.compute == pytest.approx(2 * no_bubble, rel=1e-12)


def test_zero0_all_reduces_the_gradients_in_two_ring_passes_once_per_step():
    """An all-reduce is a reduce-scatter then an all-gather, each moving (ranks - 1) / ranks of the bytes through
    every rank's link; ZeRO-0 runs it once per step on the fp32 gradients, at the accumulation boundary."""
    plan = PlanConfig(gpus=16, gpus_per_node=8, nvlink_gbps=400.0, ib_gbps=50.0)
    settings = Settings(precision=BF16)
    inside = step_time(CFG, COUNTS, plan, Layout(1, 4, 0, 1, False, 4), settings)
    assert inside.comm == pytest.approx(2 * 4 * 950 * 3 / 4 / (400 * GB), rel=1e-12)  # 4 ranks on NVLink
    across = step_time(CFG, COUNTS, plan, Layout(1, 16, 0, 1, False, 1), settings)
    assert across.comm == pytest.approx(2 * 4 * 950 * 15 / 16 / (50 * GB), rel=1e-12)  # 16 ranks over InfiniBand
    assert across.exposed == across.comm  # no overlap_comm: nothing hides it
