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

from megadalle import run_pieces
from megadalle.config.override import command_line, override_word
from megadalle.data import atomic
from megadalle.errors import UserError
from megadalle.train.checkpoint_damage import complete_tags

RUN_WEIGHTS = "dvae.safetensors"
"""What train-dvae exports into its run directory when the run finishes and `weights` is not set (where
`run_pieces.run_export` looks for it)."""
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


def newest_step(run: Path) -> int | None:
    """The step of the run's newest complete checkpoint (those a resume from an older one abandoned are set aside
    elsewhere)."""
    tags = complete_tags(run / "checkpoints")
    return int(tags[-1].removeprefix("step_")) if tags else None


def run_weights(run: Path, given: str) -> Path:
    """The weights file train-dvae run `run` exported (`given` is how the user named the run, for the messages). The
    way out offered besides finishing the run writes another file, passed as it is: an export over the run's own
    file would still be older than its record says, and refused again."""
    record = run_pieces.read(run)
    other = run_pieces.other_model(record, "dvae")  # a Transformer's or CLIP's run: not advised to finish as a dVAE
    if other is not None:
        raise DVAEWeightsError(f"dvae_weights={given}: a run directory of another model ({other}), not of "
                               "train-dvae; pass a train-dvae run directory or dVAE weights")
    path = run_pieces.run_export(run, record.get("config", {}), "dvae")
    exported, newest = exported_step(run), newest_step(run)
    rerun = "rerun train-dvae with the same command to finish and export"
    if newest is not None:  # export reads the EMA where the run trained one, as train-dvae's own export does
        other = path.with_name(f"{path.stem}-step{newest}.safetensors")
        export = command_line("export", run=given, output=other, dtype="fp32")
        rerun += f", or write its newest checkpoint's with `{export}` and pass {override_word('dvae_weights', other)}"
    if not path.is_file():
        raise DVAEWeightsError(f"dvae_weights={given}: a run directory without its weights {path} (train-dvae exports "
                               f"them when the run finishes); {rerun}")
    if exported is not None and newest is not None and exported < newest:
        raise DVAEWeightsError(f"dvae_weights={given}: {path} holds the weights of step {exported}, and the run has "
                               f"trained to step {newest} since (resumed, and stopped before it finished); {rerun}")
    return path
