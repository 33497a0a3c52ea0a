"""Verbs as hydra applications, for what only hydra's own runner does: `-m` sweeps and launchers.

`megadalle train -m trainer.lr=1e-3,3e-4 ...` (or any hydra flag: `--cfg job`, `--info`) hands the
command line to hydra's runner with the verb's YAML as the primary config, exactly what `@hydra.main`
does, so sweeps, sweeper plugins and launcher plugins work as hydra users expect, among them the
submitit launcher that submits each job to Slurm (`scripts/setup.sh slurm`, then
`hydra/launcher=submitit_slurm hydra.launcher.partition=...`). Each job runs the same checks and
stage as a plain run (megadalle.cli.execute). A plain run keeps the compose path: no output folder of
hydra's, no logging set-up, callable in-process by the demo and the tests.

Where jobs land: conf/config.yaml sets hydra.sweep.dir to `<out_dir>/multirun/<verb>` with one
sub-directory per job number. Every path a job writes to goes per job (megadalle.sweep_jobs): one given on the
command line (`output=DIR`, `run_dir=`, `weights=`) is the sweep's, job i's under it (DIR/<i>), unless the sweep
runs over it (`run_dir=a,b`: each job's own); one left to its default (a training run, generate's, evaluate's or the
demo's output) is the job's folder, so rerunning the same sweep resumes every job (and a changed job is refused, see
megadalle.train.rundir), while another sweep's job of the same number is refused there. Before, only generate and
evaluate went per job: the other verbs' jobs wrote one file after another (the last kept), and a sweep's training
jobs given a run_dir resumed each other.
"""
from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict


def override_key(item: str) -> str:
    """The key an override sets (`key=`, `+key=`, `++key=`, `~key`'s is `~key`)."""
    return item.lstrip("+").partition("=")[0]


def gives(overrides: list[str], key: str) -> bool:
    """Whether `overrides` set `key`."""
    return any(override_key(item) == key for item in overrides)


class VerbJob:
    """The task function of one verb. A class (not a closure) so that launchers that pickle the task
    function, like submitit's, find it by reference on the node that runs the job. `overrides` are the
    command line's as typed: hydra hands each job its own re-written (`prompt=3.10` as `prompt=3.1`), which
    would lose the text a text key keeps (megadalle.config.compose.keep_text). `crashes` are what the jobs' stages
    raised (hydra's basic launcher runs every job, then raises the first job's): a crash keeps its traceback, where
    run_with_hydra reports hydra's own errors as one line. `records`: the job writes hydra's record of it
    (megadalle.sweep_jobs.write_record), hydra's own being turned off (`hydra_argv`)."""

    def __init__(self, verb: str, overrides: list[str], records: bool = True):
        from megadalle.sweep_jobs import swept_keys

        self.verb, self.overrides, self.records = verb, overrides, records
        self.swept = swept_keys(overrides)  # the sweep's, the same for every job
        self.crashes: list[BaseException] = []
        self.pid = os.getpid()
        self.__name__ = self.__qualname__ = f"megadalle {verb}"  # what hydra names the job after, unless told

    def __call__(self, cfg: DictConfig) -> int:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from megadalle.cli import execute, fail, failures_kept
        from megadalle.config.compose import conf_dir, keep_text, primary_given
        from megadalle.config.required import restore
        from megadalle.errors import UserError
        from megadalle.sweep_jobs import check_record, job_named, place_outputs, write_record
        from megadalle.train.signals import STOPPED_EXIT

        hydra = HydraConfig.get()
        multirun = hydra.mode == RunMode.MULTIRUN
        task, folder = list(hydra.overrides.task), hydra.runtime.output_dir
        num = hydra.job.num if multirun else None
        composed = OmegaConf.create(OmegaConf.to_container(cfg)) if self.records else None  # as hydra gave it
        hydra_root = HydraConfig.instance().cfg
        choices = {g: o for g, o in hydra.runtime.choices.items() if not g.startswith("hydra")}
        extra = tuple(Path(s.path) for s in hydra.runtime.config_sources if s.schema == "file" and s.provider != "main")
        primary = hydra.job.config_name if hydra.job.config_name != self.verb else None  # conf/'s own comes first
        given = [*task, *primary_given(extra, primary)]
        with open_dict(cfg):
            restore(cfg, conf_dir(), self.verb, choices, given)
            keep_text(cfg, self.verb, self.overrides)  # a sweep's values stay hydra's: keep_text skips sweeps
            swept = self.swept if multirun else []
            home = place_outputs(cfg, self.verb, task, swept, num, folder) if multirun else None
        if home:
            try:
                check_record(home, num, task, swept)
            except UserError as err:
                message = f"{job_named(num, task, swept)}: {err}"
                self.stop(fail(self.verb, message), message)
        try:
            with failures_kept() as said:
                code = execute(self.verb, cfg)
        except BaseException as err:
            code = None
            self.crashes.append(err)
            raise
        finally:
            if self.records and code != 2:
                write_record(home[0] if home else folder, composed, hydra_root, task)
        if code in (2, STOPPED_EXIT, 130):  # a user error, a stop signal or Ctrl-C stops the sweep
            self.stop(code, said[-1] if said else None)
        return code

    def stop(self, code: int, message: str | None) -> None:
        """End the sweep with `code`: SystemExit in this process (hydra's basic launcher, which would run the next job
        after an exception); in a launcher's process (submitit's), JobStopped, which the launcher returns to the
        sweep as the job's result, where a SystemExit left no result ("has not produced any output") and a
        traceback of the launcher's."""
        if os.getpid() == self.pid:
            raise SystemExit(code)
        raise JobStopped(code, message)


class JobStopped(Exception):
    """A job of a launcher's process that ended with a user error or a stop: its exit code and its one line."""

    def __init__(self, code: int, message: str | None):
        super().__init__(code, message)
        self.code, self.message = code, message


VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--experimental-rerun")
"""Hydra's flags that take the argument after them as their value."""

INFO_VALUES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
"""`--info`'s optional value: a word after it that is none of these is no value of its."""


HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p", "--run",
               "-r", "--multirun", "-m", "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")
"""Every flag hydra's parser takes (hydra/_internal/utils.py get_args_parser)."""


def check_flags(args: list[str]) -> None:
    """A ConfigError for the first of `args` that starts with `-` and is no flag of hydra's (nor, argparse's
    abbreviation, the start of one), naming the override it was most likely meant as: `--input x` left `x`
    refused as a bare word, `--input=x` met argparse's usage and "unrecognized arguments"."""
    from megadalle.config import ConfigError

    for at, arg in enumerate(args):
        name, sep, value = arg.partition("=")
        known = name in HYDRA_FLAGS or (name.startswith("--") and len(name) > 3
                                        and any(flag.startswith(name) for flag in HYDRA_FLAGS))
        if not re.fullmatch(r"--?[A-Za-z][\w.-]*", name) or known or args[at - 1:at] and args[at - 1] in VALUE_FLAGS:
            continue
        if not sep and at + 1 < len(args) and "=" not in args[at + 1] and not args[at + 1].startswith("-"):
            value, arg = args[at + 1], f"{arg} {args[at + 1]}"
        key = name.lstrip("-").replace("-", "_")
        raise ConfigError(f"{arg}: megadalle's keys are set as key=value, without dashes: write "
                          f"{key}={value or 'VALUE'}")


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(hydra's flags with their values, the overrides) of `args`. A flag starts with `-`; its value is the word
    after it where it takes one (`--cfg job`); every other word is an override, a bare word (`a red circle`
    unquoted) among them, which the overrides' checks then refuse as a plain run's (argparse refused it with its
    usage and "unrecognized arguments")."""
    flags, overrides, value_of = [], [], None
    for arg in args:
        is_value = value_of in VALUE_FLAGS or (value_of in ("--info", "-i") and arg in INFO_VALUES)
        (flags if is_value or arg.startswith("-") else overrides).append(arg)
        value_of = None if is_value else arg
    return flags, overrides


def flag_value(flags: list[str], *names: str) -> str | None:
    """The value of the flag `names` spell (`--config-dir X`, `--config-dir=X`, `-cd X`), None if not given."""
    for at, flag in enumerate(flags):
        name, sep, value = flag.partition("=")
        if name in names:
            return value if sep else (flags[at + 1] if at + 1 < len(flags) else None)
    return None


def is_multirun(flags: list[str]) -> bool:
    """Whether hydra's flags ask for a sweep (`-m`, `--multirun`): its overrides are then several configs."""
    return "-m" in flags or "--multirun" in flags


def config_flags(flags: list[str]) -> tuple[tuple[Path, ...], str | None]:
    """(`--config-dir`'s folder, `--config-name`'s config) of hydra's flags, for megadalle's own checks: a group
    option or a required key that the user's folder or primary config gives is given. `--config-path` would
    replace megadalle's conf/ itself, where every verb's config lives, and is refused."""
    from megadalle.config import ConfigError

    path = flag_value(flags, "--config-path", "-cp")
    if path is not None:
        raise ConfigError(f"--config-path {path}: megadalle's verbs read their configs from its own conf/; add a "
                          "folder of yours with --config-dir DIR (and --config-name NAME for a primary config in it)")
    folder = flag_value(flags, "--config-dir", "-cd")
    return (Path(folder),) if folder else (), flag_value(flags, "--config-name", "-cn")


def hydra_argv(verb: str, args: list[str]) -> list[str]:
    """The `sys.argv` hydra's runner reads for `megadalle <verb> ARGS`: the overrides (the job's name among them),
    then hydra's flags with their values. Hydra's parser reads its overrides as one run of positional arguments,
    so `a=1 -m b=2` would leave `b=2` unrecognised; and a flag whose value is optional (`--info`) takes the
    argument after it as its value, so no override may follow the flags. Hydra's record of each job (`.hydra/`) is
    the job's to write once it has run (VerbJob), unless the command line sets hydra.output_subdir."""
    flags, overrides = split_flags(args)
    own = [] if gives(overrides, "hydra.output_subdir") else ["hydra.output_subdir=null"]  # VerbJob writes it
    return [f"megadalle {verb}", *overrides, f"hydra.job.name={verb}", *own, *flags]


def run_with_hydra(verb: str, args: list[str]) -> int:
    """Run `megadalle <verb> ARGS` through hydra's runner (as `@hydra.main` would); returns the exit code. The
    overrides pass a plain run's checks first (sweeps allowed), and an error of hydra's own in composing
    (`trainer.lr=abc`) is one line and exit code 2, as on a plain run: hydra's runner printed it over several
    lines, advised `+key` for a misspelt key and exited 1, the status of a crash. A sweep's jobs are each checked
    before the first runs (megadalle.sweep_jobs.check_jobs); `--cfg job` is a plain run's compose (print_job_config)."""
    import hydra

    from megadalle.cli import compose_errors, error_line, fail
    from megadalle.config import register_schemas
    from megadalle.config.compose import check_overrides, conf_dir
    from megadalle.errors import UserError
    from megadalle.sweep_jobs import check_jobs, check_shared_inputs

    flags, overrides = split_flags(args)
    try:
        check_flags(args)
        extra, primary = config_flags(flags)
        check_overrides(verb, overrides, sweeps=True, extra=extra)
        if is_multirun(flags):
            check_shared_inputs(verb, overrides)
            check_jobs(verb, overrides, extra, primary)
        elif flag_value(flags, "--cfg", "-c") == "job":
            package = flag_value(flags, "--package", "-p")
            return print_job_config(verb, overrides, extra, primary, package, "--resolve" in flags)
    except UserError as err:
        return fail(verb, str(err))
    except compose_errors() as err:
        return fail(verb, error_line(err))
    register_schemas()
    job = VerbJob(verb, overrides, records=not gives(overrides, "hydra.output_subdir"))
    app = hydra.main(config_path=str(conf_dir()), config_name=verb, version_base="1.3")(job)
    saved = sys.argv
    sys.argv = hydra_argv(verb, args)
    try:
        with errors_raised():
            app()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except JobStopped as stopped:  # from a launcher's process, which printed its line in its own log
        if stopped.message:
            fail(verb, stopped.message)
        return stopped.code
    except compose_errors() as err:
        if any(err is crash for crash in job.crashes):
            raise
        return fail(verb, error_line(err))
    finally:
        sys.argv = saved
    return 0


def print_job_config(verb: str, overrides: list[str], extra: tuple[Path, ...], primary: str | None,
                     package: str | None, resolve: bool) -> int:
    """`--cfg job` (`-p KEY`: the part of it under KEY, as hydra prints it): the config the job would run, composed
    as a plain run composes it. Hydra's runner printed its own: a text key held hydra's number (`prompt=1e3` as
    1000.0) and a required key its schema's default (`tokenizer: null`, where the run says "required key not
    set")."""
    from omegaconf.errors import MissingMandatoryValue

    from megadalle.cli import fail
    from megadalle.config.compose import compose_with_choices

    cfg, _ = compose_with_choices(verb, overrides, extra, primary)
    if resolve:
        OmegaConf.resolve(cfg)
    if package in (None, "_global_"):
        print(OmegaConf.to_yaml(cfg), end="")
        return 0
    absent = object()
    try:
        part = OmegaConf.select(cfg, package, default=absent, throw_on_missing=True)
    except MissingMandatoryValue:
        part = "???"
    if part is absent:
        return fail(verb, f"--package {package}: no such key in the config")
    if isinstance(part, (DictConfig, ListConfig)):
        print(f"# @package {package}\n{OmegaConf.to_yaml(part)}", end="")
    else:
        print(part)
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
