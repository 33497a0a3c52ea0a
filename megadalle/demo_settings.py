"""The settings an earlier demo's trained stages fix in its output folder, and the refusal of a rerun that changes
one, before anything is written.

A rerun with another `demo.*` size or seed drew its data again in place (demo_done.once: raw/ removed, shards and
tokenizer rebuilt) and only then did a training stage find it could not resume the earlier demo's run: refused,
with a state_dict error for its reason, and the folder left holding a new tokenizer beside the earlier models,
which no longer matched it. `<output>/made/settings.json` records the settings a demo trains with (SETTINGS); a
rerun whose settings differ where a run with checkpoints depends on them is refused up front, naming each key.
Settings that only continue a run (the step counts; the dVAE's only until CLIP or the Transformer trained on it) or
only evaluate (sampling, the dVAE check, threads) may change.
"""
from __future__ import annotations

import json
from pathlib import Path

from megadalle.config.demo import DemoConfig
from megadalle.data import atomic
from megadalle.demo_done import record_path
from megadalle.errors import UserError

RUNS = ("dvae", "clip", "dalle")
"""The training stages' run directories under `<output>/runs`."""
DATA = ("per_scene", "holdout", "image_size", "vocab_size", "seed")
"""The data stage's inputs (demo.data_inputs): new ones draw the data, the shards and the tokenizer again in place."""


def setting(name: str) -> str:
    """The command-line key of a demo setting: `demo.<name>`, or `seed`, the command's own."""
    return name if name == "seed" else f"demo.{name}"


ON_THE_DVAE = ("clip", "dalle")
"""The runs trained on what the dVAE makes: CLIP on its reconstructions (demo.clip_images), the Transformer on its
codes. Another dVAE beside them would not match them: encode re-encoded the tokens, a finished Transformer was
exported unchanged beside the new dVAE, an unfinished one went on training on codes that now meant other
pieces."""

SETTINGS: dict[str, tuple[str, ...]] = {
    **{setting(name): RUNS for name in DATA},
    **{f"demo.{name}": ("dvae", *ON_THE_DVAE) for name in ("dvae_groups", "dvae_batch", "dvae_lr", "dvae_overrides")},
    "demo.dvae_steps": ON_THE_DVAE, "demo.clip_images": ("clip",), "demo.clip_batch": ("clip",),
    "demo.clip_lr": ("clip",), "demo.text_len": ("clip", "dalle"), "demo.batch": ("dalle",), "demo.lr": ("dalle",),
}
"""Each setting and the runs that cannot resume under another value: the data (any run: the data stage rebuilds it
in place), the model's shape, learning rate and batch (the checkpoint's data identity holds the global batch), and
whatever changes the dVAE's weights for the runs trained on it (ON_THE_DVAE): its own settings and its step count,
which the dVAE's run alone may take up or down."""


TOLD_BY_RUNS = {"demo.dvae_steps": ("dvae", "trainer", "steps")}
"""Settings a record may lack (a demo's from before they were recorded) whose value a run in the folder tells, as
(run, config group, key) of its run.json: the dVAE's step count is its run's trainer.steps (demo_verbs.trainer_overrides).
Left out of the comparison, a new value went through once and was recorded as the folder's."""


def settings_path(out: Path) -> Path:
    return record_path(out, "settings")


def value(d: DemoConfig, seed: int, name: str):
    """The demo setting `name` (a DemoConfig field, or `seed`) of this run."""
    return seed if name == "seed" else getattr(d, name)


def current(d: DemoConfig, seed: int) -> dict:
    """This run's SETTINGS, by key."""
    return {key: value(d, seed, key.removeprefix("demo.")) for key in SETTINGS}


def recorded(out: Path) -> dict | None:
    """The settings an earlier demo in `out` trained with: its settings record, or for a folder made before the
    record, its data stage's (demo_done) inputs alone; None when neither is there."""
    for path, keys in ((settings_path(out), None), (record_path(out, "data"), DATA)):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return saved if keys is None else {setting(name): saved.get(name) for name in keys}
    return None


def told_by_runs(out: Path, keys: list[str]) -> dict:
    """The TOLD_BY_RUNS `keys` as the runs in `out` recorded them (runs/<run>/run.json), where they did."""
    told = {}
    for key in keys:
        run, group, name = TOLD_BY_RUNS[key]
        try:
            told[key] = json.loads((out / "runs" / run / "run.json").read_text())["config"][group][name]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return told


def with_checkpoints(out: Path) -> list[str]:
    """The runs in `out` that hold a checkpoint (or one being written): what a rerun would resume."""
    return [run for run in RUNS if (folder := out / "runs" / run / "checkpoints").is_dir() and any(folder.iterdir())]


def check_and_record(d: DemoConfig, out: Path, seed: int) -> None:
    """Refuse, before the demo writes anything, settings that differ from those the runs with checkpoints in `out`
    trained with; then record this run's where they are new. A setting the record lacks is the value the run it made
    tells (TOLD_BY_RUNS). Without a record beside checkpoints (a folder of an older demo), this run's settings are not
    recorded: what those runs trained with is unknown, and a later rerun would be compared against values they never
    had."""
    now, saved, runs = current(d, seed), recorded(out), with_checkpoints(out)
    if saved is not None:
        known = {**told_by_runs(out, [key for key in TOLD_BY_RUNS if key not in saved]), **saved}
        differ = [key for key in now if key in known and known[key] != now[key] and set(SETTINGS[key]) & set(runs)]
        if differ:
            shown = ", ".join(f"{key}: {known[key]!r} there, {now[key]!r} now" for key in differ)
            held = ", ".join(f"runs/{run}" for run in runs)
            raise UserError(f"{out} holds an earlier demo's runs ({held}) trained with other settings ({shown}); "
                            "rerun with that demo's settings to continue it, or give this one another output=")
    if (settings_path(out).is_file() or not runs) and saved != now:
        atomic.write_json(settings_path(out), now)
