"""Verbs as hydra applications, for what only hydra's own runner does: `-m` sweeps and launchers.

`megadalle train -m trainer.lr=1e-3,3e-4 ...` (or any hydra flag: `--cfg job`, `--info`) hands the
command line to hydra's runner with the verb's YAML as the primary config, exactly what `@hydra.main`
does, so sweeps, sweeper plugins and launcher plugins work as hydra users expect, among them the
submitit launcher that submits each job to Slurm (`scripts/setup.sh slurm`, then
`hydra/launcher=submitit_slurm hydra.launcher.partition=...`). Each job runs the same checks and
stage as a plain run (megadalle.cli.execute). A plain run keeps the compose path: no output folder of
hydra's, no logging set-up, callable in-process by the demo and the tests.

Where jobs land: conf/config.yaml sets hydra.sweep.dir to `<out_dir>/multirun/<verb>` with one
sub-directory per job number; a training job without an explicit run_dir uses its job's directory
as its run directory, so rerunning the same sweep resumes every job (and a changed job is refused,
see megadalle.train.rundir). A generate or evaluate job without an explicit output writes there too:
their default output is one folder under out_dir, where every job wrote over the one before. An explicit
`output=DIR` is the sweep's folder as hydra.sweep.dir is: job i writes to DIR/<i>. Taken as every job's
folder, it held job 0's results when job 1 came, and job 1 was refused (or, with overwrite=true, wrote over
them), so a sweep with an output of its own could not run at all.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, open_dict


OUTPUT_VERBS = ("generate", "evaluate")
"""Verbs whose results go to `output` (by default `${out_dir}/<verb>`, one folder for every job of a sweep,
which each job therefore replaces with its own: `job_output`)."""


def gives(overrides: list[str], key: str) -> bool:
    """Whether `overrides` set `key` (`key=`, `+key=`, `++key=`)."""
    return any(item.lstrip("+").partition("=")[0] == key for item in overrides)


class VerbJob:
    """The task function of one verb. A class (not a closure) so that launchers that pickle the task
    function, like submitit's, find it by reference on the node that runs the job. `overrides` are the
    command line's as typed: hydra hands each job its own re-written (`prompt=3.10` as `prompt=3.1`), which
    would lose the text a text key keeps (megadalle.config.compose.keep_text). `crashes` are what the jobs' stages
    raised (hydra's basic launcher runs every job, then raises the first job's): a crash keeps its traceback, where
    run_with_hydra reports hydra's own errors as one line."""

    def __init__(self, verb: str, overrides: list[str]):
        self.verb, self.overrides = verb, overrides
        self.crashes: list[BaseException] = []
        self.__name__ = self.__qualname__ = f"megadalle {verb}"  # what hydra names the job after, unless told

    def __call__(self, cfg: DictConfig) -> int:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from megadalle.cli import execute
        from megadalle.config.compose import conf_dir, keep_text
        from megadalle.config.required import restore
        from megadalle.preflight.runs import RUN_TASKS
        from megadalle.train.signals import STOPPED_EXIT

        hydra = HydraConfig.get()
        multirun = hydra.mode == RunMode.MULTIRUN
        choices = {g: o for g, o in hydra.runtime.choices.items() if not g.startswith("hydra")}
        with open_dict(cfg):
            restore(cfg, conf_dir(), self.verb, choices, list(hydra.overrides.task))
            keep_text(cfg, self.verb, self.overrides)  # a sweep's values stay hydra's: keep_text skips sweeps
            if self.verb in RUN_TASKS and multirun and not cfg.get("run_dir"):
                cfg.run_dir = hydra.runtime.output_dir
            if self.verb in OUTPUT_VERBS and multirun:
                cfg.output = job_output(cfg.output, hydra, gives(hydra.overrides.task, "output"))
        try:
            code = execute(self.verb, cfg)
        except BaseException as err:
            self.crashes.append(err)
            raise
        if code in (2, STOPPED_EXIT, 130):  # a user error, a stop signal or Ctrl-C stops the sweep
            raise SystemExit(code)
        return code


def job_output(output: str | None, hydra, given: bool) -> str | None:
    """A sweep job's output: its job folder (`hydra.runtime.output_dir`), or, where the command line gives an
    output, the job's number under it, so that no two jobs share a folder."""
    if not given:
        return hydra.runtime.output_dir
    return output if output is None else str(Path(str(output)) / str(hydra.job.num))  # null: refused as usual


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(hydra's flags with their values, the overrides) of `args`. An override has a `=` (or starts with `~`,
    a deletion); a flag's value (`--cfg job`) has neither."""
    flags, overrides = [], []
    for arg in args:
        is_override = "=" in arg or arg.startswith("~")
        (overrides if is_override and not arg.startswith("-") else flags).append(arg)
    return flags, overrides


def hydra_argv(verb: str, args: list[str]) -> list[str]:
    """The `sys.argv` hydra's runner reads for `megadalle <verb> ARGS`: the overrides (the job's name among them),
    then hydra's flags with their values. Hydra's parser reads its overrides as one run of positional arguments,
    so `a=1 -m b=2` would leave `b=2` unrecognised; and a flag whose value is optional (`--info`) takes the
    argument after it as its value, so no override may follow the flags."""
    flags, overrides = split_flags(args)
    return [f"megadalle {verb}", *overrides, f"hydra.job.name={verb}", *flags]


def run_with_hydra(verb: str, args: list[str]) -> int:
    """Run `megadalle <verb> ARGS` through hydra's runner (as `@hydra.main` would); returns the exit code. The
    overrides pass a plain run's checks first (sweeps allowed), and an error of hydra's own in composing
    (`trainer.lr=abc`) is one line and exit code 2, as on a plain run: hydra's runner printed it over several
    lines, advised `+key` for a misspelt key and exited 1, the status of a crash."""
    import hydra
    from omegaconf.errors import InterpolationResolutionError

    from megadalle.cli import bad_config, bad_interpolation, compose_errors, fail
    from megadalle.config import register_schemas
    from megadalle.config.compose import check_overrides, conf_dir
    from megadalle.errors import UserError

    overrides = split_flags(args)[1]
    try:
        check_overrides(verb, overrides, sweeps=True)
    except UserError as err:
        return fail(verb, str(err))
    register_schemas()
    job = VerbJob(verb, overrides)
    app = hydra.main(config_path=str(conf_dir()), config_name=verb, version_base="1.3")(job)
    saved = sys.argv
    sys.argv = hydra_argv(verb, args)
    try:
        with errors_raised():
            app()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except compose_errors() as err:
        if any(err is crash for crash in job.crashes):
            raise
        return fail(verb, bad_interpolation(err) if isinstance(err, InterpolationResolutionError) else bad_config(err))
    finally:
        sys.argv = saved
    return 0


@contextmanager
def errors_raised():
    """Hydra's runner raising its errors (HYDRA_FULL_ERROR=1) instead of printing them and exiting 1, so that
    run_with_hydra reports them as one line."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
