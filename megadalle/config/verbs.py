"""The dataclasses that declare each verb's own (top-level) keys; the groups beside them have their schemas.

A verb's keys are not typed while hydra composes (only its groups are), so these say what they are: `--help`
documents each key by its field's docstring (megadalle.config.help), and composing keeps the text of a value
given to a text key (megadalle.config.compose.keep_text). A key no dataclass declares is documented by the
comment beside it in the verb's YAML and keeps the type hydra reads.
"""
from __future__ import annotations

import typing

from megadalle.config.data import IndexConfig, PrepareConfig, TokenizerConfig
from megadalle.config.demo import DemoRunConfig
from megadalle.config.dvae import EncodeConfig, ImportDVAEConfig, TrainDVAEConfig
from megadalle.config.evaluate import EvaluateConfig
from megadalle.config.export import ExportConfig
from megadalle.config.plan import PlanConfig
from megadalle.config.sample import GenerateConfig
from megadalle.config.train import RunConfig
from megadalle.config.train_verbs import TrainClipConfig, TrainConfig

VERB_SCHEMAS: dict[str, tuple[type, ...]] = {
    "prepare": (PrepareConfig,),
    "index": (IndexConfig,),
    "tokenizer": (TokenizerConfig,),
    "train-dvae": (TrainDVAEConfig, RunConfig),
    "import-dvae": (ImportDVAEConfig,),
    "encode": (EncodeConfig,),
    "train-clip": (TrainClipConfig, RunConfig),
    "train": (TrainConfig, RunConfig),
    "export": (ExportConfig,),
    "generate": (GenerateConfig,),
    "evaluate": (EvaluateConfig,),
    "plan": (PlanConfig,),
    "demo": (DemoRunConfig,),
}

UNPIPELINED = ("zero1", "zero2", "zero3")
"""The DeepSpeed layouts of a model that is not built in pipeline stages: `deepspeed=pipe` is the Transformer's
alone (train/pipeline.py). Whether a task runs pipelined is the task's to say (train.task.runs_pipelined), which the
config, below the training code, cannot ask: tests/cli/test_unpipelined_verbs.py holds these options to it."""

GROUP_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {"data": ("tokens", "synthetic")},
    "train-dvae": {"data": ("images",), "deepspeed": UNPIPELINED},
    "train-clip": {"data": ("images",), "deepspeed": UNPIPELINED},
}
"""The options of a shared group that a verb can read, where not all can: `data=images` holds image shards (the
dVAE's and CLIP's), `tokens` token shards and `synthetic` random tokens (the Transformer's); the dVAE and CLIP
cannot run pipelined (`deepspeed=pipe` was refused only once DeepSpeed started, after a first refusal had asked for
a multiple of its stages in ranks)."""


def declares_text(verb: str, key: str) -> bool:
    """Whether one of the verb's dataclasses declares `key` a text (`str` or `str | None`)."""
    for cls in VERB_SCHEMAS.get(verb, ()):
        hint = typing.get_type_hints(cls).get(key)
        if hint is str or str in typing.get_args(hint):
            return True
    return False
