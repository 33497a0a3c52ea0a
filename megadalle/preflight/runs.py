"""What every training verb's run shares, checked before it starts: its typed keys, its `name` and its run
directory, which rank 0 makes only once DeepSpeed has started."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from megadalle.preflight.probes import can_make, fits

RUN_TASKS = {"train": "transformer", "train-dvae": "dvae", "train-clip": "clip"}
"""Training verbs and their task's name (the default run directory is <out_dir>/<task>/<name>)."""


def check_run_dir(verb: str, cfg: DictConfig) -> None:
    """The run directory: its `name` one folder, the folder one that can be made or written (rank 0 makes it once
    DeepSpeed has started: a file or an unwritable place in its path was a traceback there), and a rerun into an
    existing one must have its config (megadalle.train.rundir.RESUMABLE aside)."""
    from megadalle.config import typed_container
    from megadalle.config.train import RunConfig
    from megadalle.train import rundir

    given, out_dir, name = cfg.get("run_dir"), str(cfg.get("out_dir", "outputs")), cfg.get("name")
    task = RUN_TASKS[verb]
    check_name(name, out_dir, task)
    path = rundir.path_for(given, out_dir, task, name)
    subject = f"run_dir={given}" if given else f"out_dir={out_dir} (the run directory {path})"
    can_make(subject, path, "folder")
    not_data(subject, path)
    same_verb(subject, path, verb)
    rundir.check_config(path, typed_container(cfg, RunConfig), partial(run_options, verb))  # as train records it


def not_data(subject: str, path: Path) -> None:
    """A run directory that is a data folder (shards, images) without a run of its own is refused: `run_dir=<the
    shards it trains on>` wrote its checkpoints, run.json and export among them."""
    from megadalle.data.index import INDEX_NAME
    from megadalle.data.sources import IMAGE_EXTENSIONS

    if not path.is_dir() or (path / "run.json").exists():
        return
    data = next((p.name for p in sorted(path.iterdir()) if p.name == INDEX_NAME
                 or p.suffix.lower() in (".tar", *IMAGE_EXTENSIONS)), None)
    fits(data is None, f"{subject}: a folder of data ({data}, ...), not a run directory; give a new or empty folder")


def same_verb(subject: str, path: Path, verb: str) -> None:
    """A run directory of another training verb is named as such: its ~40 keys of another model were listed as
    differing, with advice to "rerun with the same values" that this verb has no keys for."""
    import json

    from megadalle.train.clip import FACTORY as CLIP
    from megadalle.train.dvae import FACTORY as DVAE
    from megadalle.train.transformer import FACTORY as TRANSFORMER

    record = path / "run.json"
    if not record.is_file():
        return
    try:
        named = json.loads(record.read_text()).get("task_factory")
    except (OSError, ValueError, AttributeError):
        return  # the config comparison reads it again and says what is wrong
    verbs = {TRANSFORMER: "train", DVAE: "train-dvae", CLIP: "train-clip"}
    other = verbs.get(named)
    fits(other is None or other == verb, f"{subject}: holds a `megadalle {other}` run, not a `megadalle {verb}` one; "
                                         "give another run_dir, or name=")


def run_options(verb: str, saved: dict, diff: list[tuple[str, Any, Any]]) -> list[str]:
    """For each config group among the keys of a rerun's `diff` (key, the run's value, the rerun's), the first of
    `verb`'s options of it that sets those keys to the run's values and the rest of the group as the `saved` run's
    config has it (rundir.config_diff finds nothing there, the other groups as the run's): `deepspeed=zero1`. An
    option that gave the diff's keys alone could change others of the group."""
    from omegaconf import OmegaConf

    from megadalle.config.compose import compose, verb_group_options
    from megadalle.train import rundir

    found = []
    for group in dict.fromkeys(key.split(".")[0] for key, _, _ in diff if "." in key):
        if not isinstance(saved.get(group), dict):
            continue
        runs = {key: old for key, old, _ in diff if key.startswith(f"{group}.")}
        for option in verb_group_options(verb, group):
            given = OmegaConf.to_container(compose(verb, [f"{group}={option}"])[group])
            sets = rundir.flatten({group: given})
            if all(sets.get(key) == old for key, old in runs.items()) and not any(
                    key.startswith(f"{group}.") for key, _, _ in rundir.config_diff(saved, {**saved, group: given})):
                found.append(f"{group}={option}")
                break
    return found


def check_run_keys(cfg: DictConfig) -> None:
    """The training verbs' shared keys typed (config.train.RunConfig): `seed=abc` was an int() traceback inside
    train and train-clip once every other check had passed."""
    from megadalle.config import build, top_level
    from megadalle.config.train import RunConfig

    build(RunConfig, top_level(cfg, RunConfig), "")


def check_name(name, out_dir: str, task: str) -> None:
    """A run's `name` is one folder under <out_dir>/<task>: `../x` put the run outside out_dir, `a/b` nested it
    where no other run looks. A directory anywhere else is `run_dir`'s to give."""
    text = str(name or "")
    fits(not text or (Path(text).name == text and text not in (".", "..")),
         f"name={name}: a run's name is one folder under {out_dir}/{task} (no `/`, not `.` or `..`); give "
         "name=<plain name>, or run_dir=<any path> for a directory elsewhere")
