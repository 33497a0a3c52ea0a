"""The `ema` key of `export`, `generate` and `evaluate`: which weights of a training run directory they read.

`auto`, the default, reads a run's EMA when it trained one (`trainer.ema`): the weights its validation and media
scored, and the ones train-dvae and train-clip export. The Transformer's verbs once read the live weights unless
told `ema=true`, so colleagues got a model other than the one validation scored. `true` insists on the EMA (a run
without one is refused), `false` takes the live weights. A text key, so that hydra's `ema=true` stays a word; read
without regard to case, since a `-m` sweep's `ema=true,false` reaches the schema as True and False.
"""
from __future__ import annotations

from megadalle.config import check

EMA_CHOICES = {"auto": None, "true": True, "false": False}
"""The key's words and what the readers of a run take them as: None (`auto`) resolves per run
(megadalle.train.consolidate.chosen_ema)."""


def check_ema(value: str, key: str = "ema") -> None:
    check(str(value).lower() in EMA_CHOICES, key, value, f"expected one of {', '.join(EMA_CHOICES)}")


def ema_choice(value: str) -> bool | None:
    """The key's value as the readers of a run take it: True, False, or None for `auto`."""
    return EMA_CHOICES[str(value).lower()]


def ema_argument(value: bool | str | None, key: str = "ema") -> bool | None:
    """A Python caller's `ema` (load_pipeline, load_model, load_run): True, False, None, or the verbs' words. The
    string "false" is truthy: it read the EMA, the opposite of what was asked."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in EMA_CHOICES:
        return ema_choice(value)
    raise ValueError(f"{key}={value!r}: expected True, False or None (auto), or one of {', '.join(EMA_CHOICES)}")
