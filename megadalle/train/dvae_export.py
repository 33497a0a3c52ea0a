"""The weights a train-dvae run directory stands for (`encode dvae_weights=<run dir>`): the file the run exported,
where its run.json says (`weights`, else <run>/dvae.safetensors), refused when the run trained past it.

train-dvae exports once the run finishes, after the checkpoint of its last update, and records the step it exported
(EXPORTED, in the run directory). A run resumed to train on (a larger `trainer.steps`) and stopped before it finished
(a signal, a crash, a time limit) saved newer checkpoints and left the file of its earlier finish in place: read as
the run's weights, it gave the earlier ones, in silence. Its recorded step is below the run's newest complete
checkpoint, which tells it apart from a finished run's; a step, not a file time, so that a copy of the run (`cp -r`
gives every file a new time) reads the same. A run directory from before the record is read as it was, unchecked.
Not the checkpoint itself, as `generate` would read: it holds the raw weights where the export holds their average
(trainer.ema).
"""
from __future__ import annotations

import json
from pathlib import Path

from megadalle.data import atomic
from megadalle.errors import UserError
from megadalle.train.checkpoint_damage import complete_tags
from megadalle.train.rundir import RUN_JSON, started_here

RUN_WEIGHTS = "dvae.safetensors"
"""What train-dvae exports into its run directory when the run finishes and `weights` is not set."""
EXPORTED = "exported.json"
"""{"step": N}: the update train-dvae's last export was written at."""


def record_export(run: Path, step: int) -> None:
    atomic.write_json(run / EXPORTED, {"step": step})


def exported_step(run: Path) -> int | None:
    """The step the run's last export was written at; None for a run from before the record (or one unreadable)."""
    try:
        step = json.loads((run / EXPORTED).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


class DVAEWeightsError(UserError, FileNotFoundError):
    """`dvae_weights` names nothing encode can read; the message says what to pass."""


def read_config(run: Path, given: str) -> dict:
    """The config the run's run.json records (the last start's: `weights` may change at a resume)."""
    try:
        record = json.loads((run / RUN_JSON).read_text())
    except ValueError as err:
        raise DVAEWeightsError(f"dvae_weights={given}: {run / RUN_JSON} is not readable ({err}); pass the dVAE's "
                               ".safetensors file") from None
    config = record.get("config") if isinstance(record, dict) else None
    return config if isinstance(config, dict) else {}


def exported_path(run: Path, config: dict, given: str) -> Path:
    """Where the run exports its weights: its `weights`, recorded absolute (rundir.recorded); one recorded relative
    (a run.json from before) read from the folder the run was started from only, where it names the same file."""
    value = config.get("weights")
    if not value:
        return run / RUN_WEIGHTS
    path = Path(str(value))
    if path.is_absolute():
        return path
    if started_here(run, config):
        return Path.cwd() / path
    raise DVAEWeightsError(f"dvae_weights={given}: its run.json records weights={value}, relative to the folder the "
                           "run was started from, which is not this one or cannot be told; pass that file as "
                           "dvae_weights=FILE, or run this from that folder")


def newest_step(run: Path) -> int | None:
    """The step of the run's newest complete checkpoint (those a resume from an older one abandoned are set aside
    elsewhere)."""
    tags = complete_tags(run / "checkpoints")
    return int(tags[-1].removeprefix("step_")) if tags else None


def run_weights(run: Path, given: str) -> Path:
    """The weights file train-dvae run `run` exported (`given` is how the user named the run, for the messages)."""
    config = read_config(run, given)
    path = exported_path(run, config, given)
    trainer = config.get("trainer")
    ema = " ema=true" if isinstance(trainer, dict) and trainer.get("ema") is not None else ""
    export = f"`megadalle export run={given} output={path} dtype=fp32{ema}`"
    if not path.is_file():
        raise DVAEWeightsError(f"dvae_weights={given}: a run directory without its weights {path} (train-dvae exports "
                               f"them when the run finishes); rerun train-dvae with the same command to finish and "
                               f"export, or write them from its newest checkpoint with {export}")
    exported, newest = exported_step(run), newest_step(run)
    if exported is not None and newest is not None and exported < newest:
        raise DVAEWeightsError(f"dvae_weights={given}: {path} holds the weights of step {exported}, and the run has "
                               f"trained to step {newest} since (resumed, and stopped before it finished); rerun "
                               f"train-dvae with the same command to finish and export, or write them from its newest "
                               f"checkpoint with {export}")
    return path
