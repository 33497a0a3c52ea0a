"""deepspeed.initialize in one place: precision, optimizer, schedule, ZeRO stage or pipeline.

The model stays a plain nn.Module; parallelism is applied here, from outside. Without a pipeline
the task's loss runs inside `LossModule.forward`, so DeepSpeed's forward bookkeeping (gradient
accumulation scaling, ZeRO-3 parameter gathering) sees every micro-batch.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from megadalle.config import ConfigError
from megadalle.config.train import DeepSpeedConfig, TrainerConfig, check_bf16_layout
from megadalle.train import apex_adam, distributed, schedule
from megadalle.train.masters import stage0_masters, torch_optimizer
from megadalle.train.task import Batch, PipelineSpec, Task, runs_pipelined


class LossModule(nn.Module):
    """The module DeepSpeed wraps: the task's model (as `.model`) plus the task's loss as forward.

    `run(model, batch, step)` replaces the loss for a task that runs its updates itself (Task.update_runner):
    whatever it computes from the model then goes through the engine's forward too."""

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Batch, step: int, run: Callable[[nn.Module, Batch, int], Any] | None = None):
        return (run or self.task.loss)(self.model, batch, step)


@dataclass
class Built:
    engine: Any
    """The DeepSpeedEngine (a PipelineEngine when pipelined)."""
    model: nn.Module
    """The task's plain model (its parameters are the engine's); under a pipeline, this stage's layers at
    their plain-model paths (megadalle.train.pipeline.stage_view)."""
    pipeline: PipelineSpec | None
    dtype: torch.dtype
    device: torch.device
    dp_rank: int
    dp_world: int

    @property
    def dp_group(self):
        """The data-parallel process group: under a pipeline this stage's, else None (every rank)."""
        return self.engine.mpu.get_data_parallel_group() if self.pipeline is not None else None


def training_dtype(precision: str) -> torch.dtype:
    """bf16 with fp32 master weights on GPU, fp32 on CPU (`auto`), or as forced."""
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` updated by `extra`: mappings met on both sides merge key by key, other values replace.

    A shallow update would let `{"zero_optimization": {"overlap_comm": false}}` drop the stage,
    and DeepSpeed would then silently train at stage 0.
    """
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def precision_config(ds: DeepSpeedConfig, dtype: torch.dtype) -> dict:
    """bf16 with fp32 master weights, gradients accumulated and reduced in `ds`'s dtypes.

    A layout DeepSpeed has no optimizer for is refused (config.train.check_bf16_layout).
    """
    if dtype != torch.bfloat16:
        return {"bf16": {"enabled": False}}
    check_bf16_layout(ds)
    return {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": ds.grad_accum_dtype},
            "communication_data_type": ds.communication_dtype}


def ds_config(trainer: TrainerConfig, ds: DeepSpeedConfig, dp_world: int, dtype: torch.dtype) -> dict:
    """The DeepSpeed JSON config equivalent to our typed configs (plus `ds.extra` deep-merged last)."""
    pipelined = ds.pipeline_stages > 1
    config = {
        "train_micro_batch_size_per_gpu": trainer.micro_batch,
        "gradient_accumulation_steps": trainer.grad_accum,
        "train_batch_size": trainer.micro_batch * trainer.grad_accum * dp_world,
        "gradient_clipping": trainer.grad_clip,
        **precision_config(ds, dtype),
        "zero_optimization": {"stage": ds.zero_stage, "overlap_comm": ds.overlap_comm and not pipelined,
                              "reduce_bucket_size": ds.reduce_bucket_size, "contiguous_gradients": True},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "dump_state": False,
        "checkpoint": {"tag_validation": "FAIL"},
    }
    return deep_merge(config, ds.extra)


def block_numel(model: nn.Module) -> int:
    """Parameters of the model's largest repeated unit: the largest child of any ModuleList or Sequential
    (a Transformer's block), else its largest tensor. Counts ZeRO-3 partitioned parameters whole."""
    def numel(params) -> int:
        return sum(getattr(p, "ds_numel", p.numel()) for p in params)

    units = [numel(child.parameters()) for m in model.modules() if isinstance(m, (nn.ModuleList, nn.Sequential))
             for child in m.children()]
    return max(units or [numel([p]) for p in model.parameters()])


def zero3_limits(config: dict, ds: DeepSpeedConfig, model: nn.Module) -> dict:
    """`config` with ZeRO-3's gathered-parameter window sized to `ds.zero3_window_blocks` of the model's
    blocks and its optimizer sub-groups to `ds.zero3_sub_group_blocks` (what `extra` sets still wins).

    DeepSpeed 0.19.8's prefetcher gathers up to stage3_prefetch_bucket_size more elements at every
    submodule call, capped only by stage3_max_live_parameters, and a gathered parameter whose next use the
    prefetcher has passed is not released (partitioned_param_coordinator.py, `__params_to_release`). With
    the default cap of 1e9 a rank of a 151M model held every parameter gathered from the forward to the
    backward: ZeRO-3 measured 0.96x ZeRO-1's memory (benchmarks/RESULTS.md). Its optimizer step flattens
    each sub-group's gradients into a new tensor and Adam adds temporaries of the same size: with the
    default sub-group of 1e12 elements that is about three fp32 copies of the rank's whole partition."""
    if ds.zero_stage != 3:
        return config
    block = block_numel(model)
    window, sub_group = ds.zero3_window(block), ds.zero3_sub_group(block)
    zero = {"stage3_max_live_parameters": window, "stage3_max_reuse_distance": window} if window else {}
    if sub_group:
        zero["sub_group_size"] = sub_group
    return deep_merge(deep_merge(config, {"zero_optimization": zero}), ds.extra)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norm gains and 1-d parameters are not shrunk (standard AdamW practice)."""
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            shape = getattr(param, "ds_shape", param.shape)  # a ZeRO-3 partitioned parameter's own is [0]
            (decay if len(shape) >= 2 else plain).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def optimizer(model: nn.Module, cfg: TrainerConfig) -> torch.optim.Optimizer:
    """torch's AdamW, with its fused kernel unless turned off (one kernel per update on CUDA; on the CPU too, instead
    of a dozen foreach ops: 1.1x per update of the demo's dVAE).

    Not apex's FusedAdam, even where it is importable: it counts Adam's step per param group, so ZeRO-3, which steps
    the optimizer once per sub-group, advanced it once per sub-group (a 64-block model's bias corrections acted as if
    64 times as far), and its checkpoints did not load into torch's AdamW (apex_adam.py converts those)."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             fused=cfg.fused_optimizer or None)


def optimizer_kind(optimizer) -> str:
    """The torch optimizer inside DeepSpeed's `optimizer`, for the run's record."""
    inner = torch_optimizer(optimizer)
    return f"torch {type(inner).__name__}" + (" (fused)" if inner.defaults.get("fused") else "")


@contextlib.contextmanager
def functional_linear_kept() -> Iterator[None]:
    """Give back `torch.nn.functional.linear` as it was once the block ends. ZeRO-3's `zero.Init` (`build_model`)
    replaces it with DeepSpeed's memory-efficient linear for the rest of the process ("this will persist unless
    manually reset"): the run needs it (autograd's addmm would keep each gathered weight alive through its transpose
    until the backward), but the process's later work, a sweep's next job or an in-process caller's own models, then
    ran every linear as a product and a separate bias add: one more rounding in bf16, one more kernel on a GPU."""
    linear = torch.nn.functional.linear
    try:
        yield
    finally:
        torch.nn.functional.linear = linear


def build_model(task: Task, ds: DeepSpeedConfig, config: dict) -> nn.Module:
    """The task's model; under ZeRO-3 built inside `deepspeed.zero.Init` with the run's config when the task
    initialises per module (Task.zero3_init): each module is partitioned over the data-parallel ranks as
    soon as it is constructed (in the training dtype), so no rank ever holds the whole model."""
    if ds.zero_stage != 3 or not task.zero3_init:
        return task.build_model()
    import deepspeed

    with deepspeed.zero.Init(config_dict_or_path=config):
        return task.build_model()


def build(task: Task, trainer: TrainerConfig, ds: DeepSpeedConfig, world_size: int) -> Built:
    """Build the task's model and wrap it in DeepSpeed (a PipelineModule when pipeline_stages > 1)."""
    import deepspeed

    dtype = training_dtype(trainer.precision)
    if world_size % ds.pipeline_stages:
        raise ConfigError(f"deepspeed.pipeline_stages={ds.pipeline_stages} does not divide the world size {world_size} "
                          f"(processes launched): launch a multiple of {ds.pipeline_stages}")
    dp_world = world_size // ds.pipeline_stages
    config = ds_config(trainer, ds, dp_world, dtype)
    if ds.pipeline_stages > 1 and not runs_pipelined(task):
        raise ConfigError(f"deepspeed.pipeline_stages={ds.pipeline_stages}: task {task.name!r} cannot run pipelined")
    spec = task.pipeline() if ds.pipeline_stages > 1 else None
    if spec is not None:
        from megadalle.train.pipeline import pipeline_module, stage_view

        module = pipeline_module(spec, ds)  # builds this stage's layers only
        model = stage_view(module, spec.layer_names)
    else:
        model = build_model(task, ds, config)
        module = LossModule(task, model)
        config = zero3_limits(config, ds, model)
    opt = optimizer(module, trainer)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=opt, lr_scheduler=schedule.scheduler(opt, trainer),
                                           config=config)
    apex_adam.accept(torch_optimizer(engine.optimizer), zero3=ds.zero_stage == 3)
    undo_warmup_step(engine.optimizer)
    share_fp32_masters(engine.optimizer)
    skip_lone_allreduce(engine, ds.zero_stage, dp_world, spec is not None)
    keep_stage0_grad_norm(engine)
    device = distributed.collective_device()
    dp_rank = engine.grid.data_parallel_id if spec is not None else engine.global_rank
    return Built(engine, model, spec, dtype, device, dp_rank, dp_world)


def skip_lone_allreduce(engine, zero_stage: int, dp_world: int, pipelined: bool) -> bool:
    """At ZeRO stage 0 with one data-parallel rank, turn off the engine's all-reduce after each backward.

    DeepSpeed's stage 0 flattens every gradient into buckets, all-reduces them over the data-parallel group
    and copies them back even in a group of one, where that averages the gradients with nothing: the same
    values, bit for bit. In the single-process demo's layout it cost ~1.5 ms of a ~28 ms CLIP update on 2 CPU
    cores (benchmarks/RESULTS.md, "Trainer vs a plain PyTorch loop"). ZeRO-1/2/3 reduce through their own
    optimizer and pipelines through their own engine: left alone. Returns whether it turned it off.
    """
    if zero_stage != 0 or dp_world != 1 or pipelined:
        return False
    engine.enable_backward_allreduce = False
    return True


def keep_stage0_grad_norm(engine) -> bool:
    """Give the metrics their grad_norm at ZeRO stage 0 in fp32, where DeepSpeed 0.19.8 computes the norm only to
    clip the gradients and keeps it nowhere (`get_global_grad_norm` is None; ZeRO 1-3 and its bf16 optimizer keep
    theirs): the norm before clipping, over every rank's and pipeline stage's gradients, as those report it. With
    clipping it is the clip's own norm (no second pass); without, one pass of the same function at max_norm=inf, which
    scales the gradients by exactly 1. Returns whether it applied."""
    if engine.zero_optimization() or engine.bfloat16_enabled() or engine.fp16_enabled():
        return False
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip(max_norm: float = engine.gradient_clipping()) -> None:
        engine._global_grad_norm = float(clip_grad_norm_(engine.module.parameters(), max_norm, mpu=engine.mpu))

    if engine.gradient_clipping() > 0:
        engine.clip_fp32_gradients = clip
        return True
    take_step = engine._take_model_step

    def measured_step(*args, **kwargs):
        clip(float("inf"))
        return take_step(*args, **kwargs)

    engine._take_model_step = measured_step
    return True


def undo_warmup_step(optimizer) -> bool:
    """Start bf16 at ZeRO stage 0 from the state every other layout starts from.

    There DeepSpeed 0.19.8 wraps torch's AdamW in its FP16_UnfusedOptimizer, whose constructor creates Adam's state
    by running one real step with zero gradients (`initialize_optimizer_states`): AdamW's step count started at 1,
    so every bias correction was one step ahead (the first update 0.74x its size), and the fp32 masters took a
    weight-decay step before training. Measured at the tiny model: the loss after the first update 4.898 against
    4.835 under ZeRO-1/2/3 and pipelines. The masters are copied again from the weights they were cloned from (the
    warm-up step does not write the weights back) and the state is dropped: Adam creates it at the first real step.
    A resume loads it from the checkpoint afterwards. Returns whether it applied.
    """
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    if not isinstance(optimizer, FP16_UnfusedOptimizer):
        return False
    with torch.no_grad():
        for weight, master in stage0_masters(optimizer):
            master.copy_(weight)
    optimizer.optimizer.state.clear()
    return True


def master_pairs(optimizer) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """(this rank's weight partition, its fp32 master) for each of a ZeRO optimizer's groups; none for
    other optimizers (ZeRO-0's torch optimizer steps the weights themselves, bf16's BF16_Optimizer)."""
    if hasattr(optimizer, "fp32_partitioned_groups_flat"):  # ZeRO-3
        return list(zip(optimizer.fp16_partitioned_groups_flat, optimizer.fp32_partitioned_groups_flat))
    if hasattr(optimizer, "single_partition_of_fp32_groups"):  # ZeRO-1/2
        import deepspeed.comm as dist

        own = [partitions[dist.get_rank(group=group)] for partitions, group in
               zip(optimizer.parallel_partitioned_bit16_groups, optimizer.real_dp_process_group)]
        return list(zip(own, optimizer.single_partition_of_fp32_groups))
    return []


def share_fp32_masters(optimizer) -> int:
    """Where a rank's weight partition is already fp32 on the master's device, make it the optimizer's
    fp32 master: one copy of the weights per rank instead of two. Returns how many groups it shared.

    ZeRO-3: DeepSpeed 0.19.8 means to ("we don't need another copy of the weights", stage3.py
    `_create_fp32_partitions`) but compares the partition's `torch.device` with its device name, a str,
    which is never equal, so every fp32 run keeps a clone: 4 bytes per parameter per rank, a quarter of
    ZeRO-3's model states in fp32 (benchmarks/RESULTS.md, "ZeRO-3's fp32 masters"). ZeRO-1/2
    (stage_1_and_2.py) clone the rank's partition of the flat weights unconditionally, and a pipeline's
    stages (ZeRO-1) do the same. `.data` is repointed, so the optimizer's parameter, the key of its state,
    stays the same object, and DeepSpeed's copies between the two (after each step, on load) become copies
    onto themselves; ZeRO-1/2's views of the master (each parameter's fp32 fragment, through which a
    universal checkpoint loads) are made again, as DeepSpeed does when it moves the master itself.
    bf16 runs (a bf16 partition) and offloaded optimizers (the master lives apart on purpose) are left as
    DeepSpeed made them.
    """
    if getattr(optimizer, "offload_optimizer", False) or getattr(optimizer, "cpu_offload", False):
        return 0
    shared = 0
    for partition, master in master_pairs(optimizer):
        if (partition is None or master.numel() == 0 or partition.shape != master.shape
                or partition.dtype != master.dtype or partition.device != master.device):
            continue
        if partition.data_ptr() != master.data_ptr():
            master.data = partition.data
            shared += 1
    if shared and hasattr(optimizer, "single_partition_of_fp32_groups"):
        optimizer._link_all_hp_params()
        optimizer.state_dict = _compact_masters(optimizer.state_dict)
    return shared


def _compact_masters(state_dict):
    """ZeRO-1/2's optimizer `state_dict` with each saved master copied out of the flat weights.

    A shared master is a view of the flat weights of every rank's partition, and torch.save writes a
    view's whole storage: without the copy each rank's checkpoint held the whole model's fp32 weights
    (at 151M on 4 ranks, 865 MiB per rank instead of 433). The copy lives only while the checkpoint
    is written.
    """
    from deepspeed.checkpoint.constants import SINGLE_PARTITION_OF_FP32_GROUPS

    def compact() -> dict:
        state = state_dict()
        state[SINGLE_PARTITION_OF_FP32_GROUPS] = [
            t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t
            for t in state[SINGLE_PARTITION_OF_FP32_GROUPS]]
        return state

    return compact
