"""The parallel layout of a run: read from `train`'s config, turned into `train` overrides, put in words."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig

from megadalle.config import ConfigError, build, check
from megadalle.config.model import TransformerConfig
from megadalle.config.override import override_value, shell_word
from megadalle.config.plan import PlanConfig
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.plan.counts import BY_BLOCK, PARTITIONS, count_parameters, unfilled_stages


class PlanError(ValueError):
    """The request cannot fit; the message says why (`plan` answers so, exit code 1). A config that contradicts
    itself is a ConfigError instead, a user error like any verb's (exit code 2)."""


@dataclass(frozen=True)
class Layout:
    pipeline: int
    data_parallel: int
    zero: int
    micro_batch: int
    checkpointing: bool
    grad_accum: int = 1
    """Micro-batches per optimizer step on each data-parallel rank."""
    partition: str = BY_BLOCK
    """How the pipeline's layers are cut into stages (deepspeed.partition_method; plan/counts.PARTITIONS)."""


def launch_overrides(layout: Layout) -> str:
    """The `megadalle train` overrides that realise `layout` (conf/deepspeed, conf/trainer)."""
    parts = [f"deepspeed=pipe deepspeed.pipeline_stages={layout.pipeline}" if layout.pipeline > 1
             else f"deepspeed=zero{layout.zero}"]
    if layout.pipeline > 1 and layout.partition != BY_BLOCK:
        parts.append(f"deepspeed.partition_method={layout.partition}")
    parts += [f"model.activation_checkpointing={str(layout.checkpointing).lower()}",
              f"trainer.micro_batch={layout.micro_batch}", f"trainer.grad_accum={layout.grad_accum}"]
    return " ".join(parts)


LAYOUT_KEYS = {"model": {"activation_checkpointing"}, "trainer": {"micro_batch", "grad_accum"},
               "deepspeed": {"zero_stage", "pipeline_stages", "partition_method"}}
"""The keys `launch_overrides` sets, left out of `train_overrides`' echo of the planned config."""


def train_overrides(model: TransformerConfig, trainer: TrainerConfig, ds: DeepSpeedConfig, layout: Layout) -> str:
    """The `megadalle train` overrides that train what was planned: the model preset and the layout, then every
    key in which the planned model, trainer and deepspeed config differ from what `train` composes with them.
    Derived from the values, not the command line: `plan`'s default model (12b) is not `train`'s (tiny), and a
    launch line without it trained the tiny model."""
    from megadalle.config.compose import conf_dir

    def differing(group: str, cls: type, planned: Any, overrides: list[str]) -> list[str]:
        composed = build(cls, _train_config(tuple(overrides))[group], group)
        changed = []
        for key, value in dataclasses.asdict(planned).items():
            if key in LAYOUT_KEYS[group] or value == getattr(composed, key):
                continue
            if group == "deepspeed" and key == "extra":  # raw DeepSpeed keys: no schema declares them
                changed += extra_overrides(value, getattr(composed, key))
            else:
                changed.append(f"{group}.{key}={override_value(value)}")
        return changed

    presets = sorted(path.stem for path in (conf_dir() / "model").glob("*.yaml"))
    by_preset = {name: differing("model", TransformerConfig, model, [f"model={name}"]) for name in presets}
    preset = min(presets, key=lambda name: len(by_preset[name]))
    chosen = [f"model={preset}", *launch_overrides(layout).split()]
    overrides = [*chosen, *by_preset[preset], *differing("trainer", TrainerConfig, trainer, chosen),
                 *differing("deepspeed", DeepSpeedConfig, ds, chosen)]
    return " ".join(shell_word(override) for override in overrides)  # a line to paste into a shell


@lru_cache(maxsize=16)
def _train_config(overrides: tuple[str, ...]) -> DictConfig:
    """`train`'s config for `overrides`, composed once: a report asks for each model preset's twice (its own launch
    line and the suggestion's) and for the trainer and deepspeed groups under the same overrides. Hydra rereads
    its YAML at each compose: 13 of them made a 12b plan with a suggestion, 6 now (5.0 s to 4.3 s in all, and a
    third off tests/unit/test_plan.py, whose plans share the presets')."""
    from megadalle.config.compose import compose

    return compose("train", list(overrides))


def extra_overrides(planned: dict, composed: dict, prefix: str = "deepspeed.extra") -> list[str]:
    """`deepspeed.extra`'s planned leaves that differ from what `train` composes, one `++key=value` each: `train`
    refuses the whole dict as one value (its keys are in no struct), and merges leaves into the preset's."""
    changed = []
    for key, value in planned.items():
        there = composed.get(key) if isinstance(composed, dict) else None
        if isinstance(value, dict) and value:
            changed += extra_overrides(value, there if isinstance(there, dict) else {}, f"{prefix}.{key}")
        elif value != there or key not in composed:
            changed.append(f"++{prefix}.{key}={override_value(value)}")
    return changed


def layout_for(model: TransformerConfig, trainer: TrainerConfig, ds: DeepSpeedConfig, plan: PlanConfig) -> Layout:
    check(plan.gpus % ds.pipeline_stages == 0, "deepspeed.pipeline_stages", ds.pipeline_stages,
          f"does not divide gpus={plan.gpus} (each pipeline takes as many ranks as it has stages)")
    check(ds.pipeline_stages == 1 or ds.partition_method in PARTITIONS, "deepspeed.partition_method",
          ds.partition_method, f"plan models {', '.join(PARTITIONS)}")
    check_stages_filled(model, ds, plan.gpus)
    return Layout(ds.pipeline_stages, plan.gpus // ds.pipeline_stages, ds.zero_stage, trainer.micro_batch,
                  model.activation_checkpointing, trainer.grad_accum, ds.partition_method)


def check_stages_filled(model: TransformerConfig, ds: DeepSpeedConfig, gpus: int, ranks: str = "") -> None:
    """Refuse a pipeline with more stages than `ds.partition_method` fills with `model.n_layers` blocks
    (plan/counts.unfilled_stages: DeepSpeed's own cut), naming the most stages that fill it and divide `gpus`
    (the ranks; `ranks` says what they are, default `gpus=N`). plan's memory and time were those of ranks with
    nothing to train (it "fit" where the model did not), and training built the empty stages in silence."""
    if ds.pipeline_stages == 1:
        return
    counts = count_parameters(model)
    empty = unfilled_stages(counts, model, ds.pipeline_stages, ds.partition_method)
    if not empty:
        return
    most = max(p for p in range(1, ds.pipeline_stages) if gpus % p == 0
               and not unfilled_stages(counts, model, p, ds.partition_method))
    what = f"Transformer block (model.n_layers={model.n_layers})" if ds.partition_method == BY_BLOCK else \
        f"layer (model.n_layers={model.n_layers} blocks, the embedding and the head)"
    raise ConfigError(f"deepspeed.pipeline_stages={ds.pipeline_stages}: partition_method={ds.partition_method} "
                      f"leaves stage{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))} with no {what}; "
                      f"at most {most} stages fill it and divide {ranks or f'gpus={gpus}'}: set deepspeed.pipeline_stages={most}")


def describe(layout: Layout) -> str:
    mode = f"pipeline {layout.pipeline} x dp {layout.data_parallel} (ZeRO-{layout.zero})" if layout.pipeline > 1 \
        else f"ZeRO-{layout.zero} (dp {layout.data_parallel})"
    checkpointing = "on" if layout.checkpointing else "off"
    return f"{mode}, micro-batch {layout.micro_batch} x {layout.grad_accum}, checkpointing {checkpointing}"
