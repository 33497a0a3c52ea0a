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
    can_make(f"run_dir={given}" if given else f"out_dir={out_dir} (the run directory {path})", path, "folder")
    rundir.check_config(path, typed_container(cfg, RunConfig), partial(run_options, verb))  # as train records it


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
