"""`megadalle plan`: exact parameter counts, memory accounting, layouts that fit, refusals with reasons."""
import pytest

from megadalle.cli import main
from megadalle.config import build, top_level
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.config.plan import PlanConfig
from megadalle.models.transformer import Transformer
from megadalle.plan import GB, RESERVED_GB, Layout, count_parameters, memory_per_gpu, suggest

from .helpers import tiny_config


def plan_for(*overrides):
    cfg = compose("plan", list(overrides))
    return build(TransformerConfig, cfg.model, "model"), build(PlanConfig, top_level(cfg, PlanConfig), "")


def test_count_equals_the_real_tiny_model():
    cfg = tiny_config()
    assert count_parameters(cfg)[0] == sum(p.numel() for p in Transformer(cfg).parameters())


def test_12b_has_about_12_billion_parameters():
    total, _ = count_parameters(plan_for("model=12b")[0])
    assert 11.5e9 < total < 12.5e9


def test_zero_stages_shard_what_they_should():
    model, _ = plan_for("model=1b")
    params, edges = count_parameters(model)
    mems = {z: memory_per_gpu(model, params, edges, Layout(1, 8, z, 1, True)) for z in (1, 2, 3)}
    assert mems[1].optimizer == pytest.approx(12 * params / 8)
    assert mems[1].grads == pytest.approx(2 * params) and mems[2].grads == pytest.approx(2 * params / 8)
    assert mems[2].weights == pytest.approx(2 * params) and mems[3].weights == pytest.approx(2 * params / 8)
    assert mems[1].total > mems[2].total > mems[3].total


def test_checkpointing_and_pipelines_cut_activation_memory_per_layer():
    model, _ = plan_for("model=12b")
    params, edges = count_parameters(model)
    assert (memory_per_gpu(model, params, edges, Layout(1, 64, 1, 1, True)).activations
            < memory_per_gpu(model, params, edges, Layout(1, 64, 1, 1, False)).activations)
    assert (memory_per_gpu(model, params, edges, Layout(4, 16, 1, 1, True)).weights
            == pytest.approx(2 * ((params - edges) / 4 + edges / 2)))


def test_suggested_layout_fits_and_divides_the_batch():
    model, plan = plan_for("model=12b", "gpus=64", "gpu_mem_gb=80")
    params, edges = count_parameters(model)
    best = suggest(model, plan, params, edges)
    assert best.pipeline * best.data_parallel == 64
    assert plan.global_batch % (best.data_parallel * best.micro_batch) == 0
    assert memory_per_gpu(model, params, edges, best).total <= (80 - RESERVED_GB) * GB


def test_cli_prints_parameters_and_layout(capsys):
    assert main(["plan", "model=12b", "gpus=64", "gpu_mem_gb=80"]) == 0
    out = capsys.readouterr().out
    assert "12.29B" in out and "suggested layout:" in out and "ZeRO-3" in out and "pipeline 8 x dp 8" in out


def test_impossible_request_is_refused_with_a_reason(capsys):
    assert main(["plan", "model=12b", "gpus=2", "gpu_mem_gb=16"]) == 1
    out = capsys.readouterr().out
    assert "impossible" in out and "do not fit on 2 x 16 GB" in out


def test_bad_plan_value_is_named(capsys):
    assert main(["plan", "gpus=0"]) == 2
    assert "gpus=0: must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("gpus,mem", [(64, 80), (16, 40), (32, 16), (8, 80)])
def test_suggested_launch_overrides_compose_into_a_valid_train_config(gpus, mem):
    from megadalle.config.train import DeepSpeedConfig, TrainerConfig
    from megadalle.plan import launch_overrides

    model, plan = plan_for("model=12b", f"gpus={gpus}", f"gpu_mem_gb={mem}")
    params, edges = count_parameters(model)
    best = suggest(model, plan, params, edges)
    overrides = launch_overrides(best, plan.global_batch // (best.data_parallel * best.micro_batch)).split()
    cfg = compose("train", ["model=12b", *overrides])
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    ds = build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    assert trainer.micro_batch * trainer.grad_accum * best.data_parallel == plan.global_batch
    assert (ds.pipeline_stages, ds.zero_stage) == (best.pipeline, best.zero)
