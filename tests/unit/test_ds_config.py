"""The DeepSpeed JSON our typed configs produce (megadalle.train.engine.ds_config) and the group timeout."""
from datetime import timedelta

import pytest
import torch

from megadalle.config import ConfigError, build
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed
from megadalle.models.transformer import Transformer
from megadalle.train.engine import block_numel, deep_merge, ds_config, zero3_limits

from .helpers import tiny_config


def layout(name: str, *overrides: str) -> DeepSpeedConfig:
    return build(DeepSpeedConfig, compose("train", [f"deepspeed={name}", *overrides]).deepspeed, "deepspeed")


def produced(ds: DeepSpeedConfig, dtype=torch.float32, **trainer) -> dict:
    return ds_config(TrainerConfig(**trainer), ds, dp_world=2, dtype=dtype)


def test_nested_extra_keeps_the_stage():
    ds = layout("zero3", "+deepspeed.extra.zero_optimization.stage3_max_live_parameters=1000",
                "+deepspeed.extra.bf16.immediate_grad_update=false")
    config = produced(ds, torch.bfloat16)
    zero = config["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_max_live_parameters"] == 1000
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    assert config["bf16"] == {"enabled": True, "immediate_grad_update": False}


def test_extra_replaces_leaves_and_adds_keys():
    merged = deep_merge({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"c": [2]}, "d": {"e": 3}, "f": 4})
    assert merged == {"a": {"b": 1, "c": [2]}, "d": {"e": 3}, "f": 4}


@pytest.mark.parametrize("name,stage", [("zero1", 1), ("zero2", 2), ("zero3", 3), ("pipe", 1)])
def test_bf16_accumulates_and_reduces_in_fp32(name, stage):
    config = produced(layout(name), torch.bfloat16, micro_batch=4, grad_accum=3)
    assert config["bf16"] == {"enabled": True}
    assert config["data_types"] == {"grad_accum_dtype": "fp32"}
    assert config["communication_data_type"] == "fp32"
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_batch_size"] == 4 * 3 * 2


def test_bf16_dtypes_are_configurable():
    config = produced(layout("zero2", "deepspeed.grad_accum_dtype=bf16", "deepspeed.communication_dtype=bf16"),
                      torch.bfloat16)
    assert config["data_types"] == {"grad_accum_dtype": "bf16"} and config["communication_data_type"] == "bf16"


def test_fp32_runs_name_no_reduced_dtypes():
    config = produced(layout("zero2"))
    assert config["bf16"] == {"enabled": False}
    assert "data_types" not in config and "communication_data_type" not in config


def test_zero0_bf16_with_fp32_accumulation_is_refused():
    with pytest.raises(ConfigError, match="deepspeed.grad_accum_dtype='fp32'.*zero_stage=0"):
        produced(layout("zero1", "deepspeed.zero_stage=0"), torch.bfloat16)
    assert produced(layout("zero1", "deepspeed.zero_stage=0", "deepspeed.grad_accum_dtype=bf16"),
                    torch.bfloat16)["data_types"] == {"grad_accum_dtype": "bf16"}


@pytest.mark.parametrize("name,overlap", [("zero1", True), ("zero2", True), ("zero3", True), ("pipe", False)])
def test_overlap_comm_wherever_deepspeed_supports_it(name, overlap):
    """DeepSpeed's ZeRO-1/2 and ZeRO-3 optimizers overlap; its PipelineEngine turns overlap off (warning)."""
    assert produced(layout(name))["zero_optimization"]["overlap_comm"] is overlap


@pytest.mark.parametrize("override,message", [
    ("deepspeed.grad_accum_dtype=fp16", "deepspeed.grad_accum_dtype='fp16'"),
    ("deepspeed.communication_dtype=int8", "deepspeed.communication_dtype='int8'"),
    ("deepspeed.timeout_minutes=0", "deepspeed.timeout_minutes=0"),
    ("deepspeed.timeout_minutes=1e-09", "deepspeed.timeout_minutes=1e-09: must be at least 0.5"),
    ("deepspeed.timeout_minutes=inf", "deepspeed.timeout_minutes=inf: must be a finite number"),
    ("deepspeed.zero3_window_blocks=inf", "deepspeed.zero3_window_blocks=inf: must be a finite number"),
])
def test_bad_values_name_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message):
        layout("zero1", override)


def test_process_group_timeout_reaches_deepspeed(monkeypatch):
    import deepspeed

    seen = {}
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(distributed.atexit, "register", lambda fn: None)
    monkeypatch.setattr(distributed.os, "environ", dict(distributed.os.environ))  # init exports RANK etc.
    distributed.init(distributed.DistEnv(0, 0, 1, "127.0.0.1", 12345, "single"), timeout_minutes=90)
    assert seen["timeout"] == timedelta(minutes=90)


def test_zero3_window_is_two_blocks_and_sub_groups_one_unless_extra_or_zero_says_otherwise():
    model = Transformer(tiny_config())
    block = sum(p.numel() for p in model.blocks[0].parameters())
    assert block_numel(model) == block
    zero = zero3_limits(produced(layout("zero3")), layout("zero3"), model)["zero_optimization"]
    assert zero["stage"] == 3
    assert (zero["stage3_max_live_parameters"], zero["stage3_max_reuse_distance"]) == (2 * block, 2 * block)
    assert zero["sub_group_size"] == block
    ds = layout("zero3", "+deepspeed.extra.zero_optimization.stage3_max_live_parameters=1000",
                "+deepspeed.extra.zero_optimization.sub_group_size=77")
    zero = zero3_limits(produced(ds), ds, model)["zero_optimization"]
    assert (zero["stage3_max_live_parameters"], zero["stage3_max_reuse_distance"], zero["sub_group_size"]) == \
        (1000, 2 * block, 77)
    zero = zero3_limits(produced(ds := layout("zero3", "deepspeed.zero3_sub_group_blocks=2.5")), ds, model)
    assert zero["zero_optimization"]["sub_group_size"] == int(2.5 * block)
    ds = layout("zero3", "deepspeed.zero3_window_blocks=0", "deepspeed.zero3_sub_group_blocks=0")
    assert zero3_limits(produced(ds), ds, model)["zero_optimization"] == produced(ds)["zero_optimization"]
    ds = layout("zero2")
    assert zero3_limits(produced(ds), ds, model) == produced(ds)
    assert block_numel(torch.nn.Linear(3, 5)) == 15  # no repeated unit: the largest tensor


@pytest.mark.parametrize("key", ["zero3_window_blocks", "zero3_sub_group_blocks"])
def test_negative_zero3_limits_are_refused_by_name(key):
    with pytest.raises(ConfigError, match=f"deepspeed.{key}=-1"):
        layout("zero3", f"deepspeed.{key}=-1")


def test_a_pipeline_that_does_not_divide_the_processes_is_a_config_error():
    from megadalle.train.engine import build

    with pytest.raises(ConfigError, match="pipeline_stages=2 does not divide the world size 1 .* a multiple of 2"):
        build(None, TrainerConfig(), DeepSpeedConfig(pipeline_stages=2), world_size=1)


def test_a_stage_in_extra_must_be_zero_stage():
    assert layout("zero3", "++deepspeed.extra.zero_optimization.stage=3").zero_stage == 3
    with pytest.raises(ConfigError, match=r"extra.zero_optimization.stage=3: differs from deepspeed.zero_stage=1.*"
                                          r"set deepspeed.zero_stage=3 instead"):
        layout("zero1", "++deepspeed.extra.zero_optimization.stage=3")


@pytest.mark.parametrize("extra,typed", [
    ("gradient_accumulation_steps=2", "trainer.grad_accum"),
    ("train_micro_batch_size_per_gpu=2", "trainer.micro_batch"),
    ("train_batch_size=64", "trainer.micro_batch and trainer.grad_accum"),
    ("gradient_clipping=0.0", "trainer.grad_clip"),
    ("optimizer.type=SGD", "trainer.lr, trainer.betas"),
    ("scheduler.type=WarmupLR", "trainer.lr, trainer.warmup_steps"),
    ("bf16.enabled=true", "trainer.precision"),
    ("fp16.enabled=true", "trainer.precision"),
    ("data_types.grad_accum_dtype=bf16", "deepspeed.grad_accum_dtype"),
    ("communication_data_type=bf16", "deepspeed.communication_dtype"),
])
def test_extra_keys_that_typed_keys_set_are_refused_naming_the_typed_key(extra, typed):
    """They replaced the typed value while plan and run.json showed it (gradient_clipping, bf16), were ignored
    (optimizer) or failed inside DeepSpeed after start-up (the batch sizes)."""
    key = extra.partition("=")[0].removesuffix(".type")  # the whole optimizer or scheduler is refused
    with pytest.raises(ConfigError, match=rf"^deepspeed\.extra\.{key}=.*: train sets this DeepSpeed key from "
                                          rf"{typed}.*; set it there instead"):
        layout("zero1", f"+deepspeed.extra.{extra}")


def test_extra_keys_no_typed_key_sets_pass():
    ds = layout("zero1", "+deepspeed.extra.bf16.immediate_grad_update=false",
                "+deepspeed.extra.zero_optimization.overlap_comm=false", "+deepspeed.extra.fp16.loss_scale=0")
    assert ds.extra["bf16"] == {"immediate_grad_update": False}
