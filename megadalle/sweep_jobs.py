"""Where each job of a `-m` sweep writes, so that no two jobs, and no two sweeps, share an output.

Every path a verb writes to is a key of its config (`output`, `weights`, `run_dir`, `report`), one value for the
whole sweep unless the sweep runs over it: job after job wrote the same file or folder, the last job's result
replaced the others' in silence, and a training job's run resumed the one before it. In a sweep such a path given
on the command line is the sweep's, and job i's is under it (`per_job`: DIR/<i>, or a file's folder/<i>/<file>);
one left to its default is the job's own folder, `<hydra.sweep.dir>/<i>`. A verb that writes into its input
(`index dir=`) cannot go per job, and a sweep of several jobs over one input is refused up front. A path the sweep
runs over is used as given, so that, swept with another key, it is several jobs' place: such jobs are refused
before any runs (`check_shared_places`).

Job folders are found again by number, so a second sweep over other values met the first one's folders and went on
from its jobs (a training job resumed, or reported as finished, a run of other values). Each job records its
overrides (hydra's `.hydra/overrides.yaml`, written once the job has run, never by a refused one: `write_record`)
in its own folder (its run, or its output: `place_outputs`; the job folder where it is that), and a job whose swept
values differ from its own folder's record is refused (`check_record`). A job whose own folder is elsewhere
(`run_dir=`) leaves the job folder's record alone: it replaced the record of another sweep's job there.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from megadalle.config import ConfigError
from megadalle.config.override import parser

FILE, FOLDER = "file", "folder"

JOB_PATHS: dict[str, dict[str, str]] = {
    "prepare": {"output": FOLDER, "report": FILE},
    "index": {"report": FILE},
    "tokenizer": {"output": FILE},
    "train-dvae": {"run_dir": FOLDER, "weights": FILE},
    "import-dvae": {"output": FILE},
    "encode": {"output": FOLDER},
    "train-clip": {"run_dir": FOLDER, "weights": FILE},
    "train": {"run_dir": FOLDER},
    "export": {"output": ".safetensors"},
    "generate": {"output": FOLDER},
    "evaluate": {"output": FOLDER},
    "demo": {"output": FOLDER},
}
"""Each verb's keys naming what it writes, each a FILE, a FOLDER, or a suffix that makes it a file (export's
`output=` is a folder, or one `.safetensors` file): given on a sweep's command line, each job writes under it
(`per_job`). A dot in a folder's name (`runs/exp.v2`) took it for a file."""

JOB_FOLDER_KEYS = {"generate": "output", "evaluate": "output", "demo": "output", "train": "run_dir",
                   "train-dvae": "run_dir", "train-clip": "run_dir"}
"""The key whose default is one place for every job (`${out_dir}/<verb>`, the run `<out_dir>/<task>/default`):
left to its default in a sweep, the job's folder stands in for it."""

SHARED_INPUTS = {"index": "dir"}
"""Verbs writing into an input folder, which no job can have to itself unless the sweep runs over it."""

RECORD = ".hydra"
"""The folder of a job's record: hydra's output_subdir, written by the job (`write_record`) instead of hydra."""


def per_job(path, num: int, kind: str = FOLDER) -> str:
    """Job `num`'s place under a sweep's `path` of `kind` (JOB_PATHS): a folder's `path/<num>`; a file's (tok.model,
    dvae.safetensors) `<its folder>/<num>/<its name>`, where what is written beside it (dvae.json beside
    dvae.safetensors; the tokenizer writes its .model alone) goes too."""
    given = Path(str(path))
    if kind == FILE or (kind != FOLDER and given.name.endswith(kind)):
        return str(given.parent / str(num) / given.name)
    return str(given / str(num))


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys `overrides` sweep over (`seed=0,1`, `trainer.lr=choice(...)`)."""
    return [o.key_or_group for o in parser().parse_overrides(overrides) if o.is_sweep_override()]


def check_shared_inputs(verb: str, overrides: list[str]) -> None:
    """A sweep of `index` (which writes into `dir`) must run over `dir` alone, a folder per job: its jobs would each
    rewrite one folder's index and report (`dir=a,b min_side=0,8` has two jobs in each folder)."""
    from megadalle.hydra_app import override_key

    key = SHARED_INPUTS.get(verb)
    swept = swept_keys(overrides)
    if key is None or not swept or swept == [key]:
        return
    given = next((item.lstrip("+") for item in overrides if override_key(item) == key), key)
    others = ", ".join(k for k in swept if k != key)
    raise ConfigError(f"{given}: several jobs of this sweep over {others} would write into the same {key}, each over "
                      f"the one before; run {verb} once per setting, or sweep over {key} alone (a folder per job)")


def place_outputs(cfg: DictConfig, verb: str, given: list[str], swept: list[str], num: int,
                  job_folder: str) -> tuple[str, str] | None:
    """Put job `num`'s outputs in `cfg`, in place: each path key `given` on the command line under its value
    (`per_job`), the one left to its default (JOB_FOLDER_KEYS) in `job_folder`, a training run named by `name=N`
    in `<out_dir>/<task>/N/<num>`. A key the sweep runs over (`swept`: `run_dir=rd/a,rd/b`) is already the job's
    own and stays as given: rerunning the sweep resumes each (swept with another key, it is several jobs' own, which
    `check_shared_places` refuses). Returns the folder that is the job's own (its run, generate's, evaluate's or the
    demo's output), where its record tells it from another sweep's job, with the key that moves it; None for a verb
    without one."""
    from megadalle.hydra_app import gives
    from megadalle.preflight.runs import RUN_TASKS

    for key, kind in JOB_PATHS.get(verb, {}).items():
        if gives(given, key) and key not in swept and cfg.get(key) is not None:
            OmegaConf.update(cfg, key, per_job(cfg[key], num, kind), merge=False)
    key = JOB_FOLDER_KEYS.get(verb)
    if key is None:
        return None
    if gives(given, key):
        return (str(cfg[key]), key) if cfg.get(key) is not None else None
    if verb in RUN_TASKS and gives(given, "name") and cfg.get("name"):
        from megadalle.train.rundir import default_path

        run = default_path(cfg.out_dir, RUN_TASKS[verb], cfg.name)
        cfg.run_dir = str(run if "name" in swept else run / str(num))
        return str(cfg.run_dir), "name"
    OmegaConf.update(cfg, key, job_folder, merge=False)
    return job_folder, "hydra.sweep.dir"


def swept_values(job_overrides: list[str], swept: list[str]) -> list[str]:
    """The items of a job's overrides that set the `swept` keys: what tells the job from the sweep's others."""
    from megadalle.hydra_app import override_key

    return [item for item in job_overrides if override_key(item) in swept]


def job_named(num: int, job_overrides: list[str], swept: list[str]) -> str:
    """How a line names job `num` of a sweep: by its number, which hydra prints beside its overrides, and by its
    swept values, which tell it from another sweep's job of the same number."""
    return f"job {num} ({' '.join(swept_values(job_overrides, swept))})"


def check_record(home: tuple[str, str], num: int, job_overrides: list[str], swept: list[str]) -> None:
    """Refuse job `num` where its own folder (`place_outputs`) records a job of other swept values (another sweep's
    job `num`), naming the key that gives the sweep folders of its own."""
    job_folder, key = home
    record = Path(job_folder) / RECORD / "overrides.yaml"
    if not swept or not record.is_file():
        return
    earlier = [str(item) for item in OmegaConf.load(record)]
    then = swept_values(earlier, swept)
    if sorted(swept_values(job_overrides, swept)) != sorted(then):
        held = " ".join(then or earlier) or "no overrides"
        raise ConfigError(f"{job_folder} holds job {num} of another sweep ({held}); give this sweep a folder of its "
                          f"own: {key}=<new {'name' if key == 'name' else 'folder'}> (or rerun that sweep's values to "
                          "continue it)")


def write_record(job_folder: str, cfg: DictConfig, hydra_root: DictConfig, job_overrides: list[str]) -> None:
    """Hydra's record of a job (config.yaml, hydra.yaml, overrides.yaml under `.hydra`), written by the job once it
    has run: hydra wrote it before the job, so a refused job had already replaced the record of the job before it."""
    folder = Path(job_folder) / RECORD
    folder.mkdir(parents=True, exist_ok=True)
    hydra_copy = OmegaConf.create(OmegaConf.to_container(hydra_root))
    hydra_copy.hydra.output_subdir = RECORD
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(hydra_copy, folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(job_overrides)), folder / "overrides.yaml")


def check_jobs(verb: str, overrides: list[str], extra: tuple[Path, ...] = (), primary: str | None = None) -> None:
    """Each job of a sweep checked before the first is launched. Under any launcher, the places the jobs write
    (`check_shared_places`): two jobs given one run_dir were caught only once the first had trained, and under a
    launcher running them side by side (submitit's Slurm array) not at all. Under hydra's basic launcher, whose
    jobs run here, in this process's environment (a Slurm job's ranks are not this one's), also as each will be
    when it runs: its folder's record of another sweep (`check_record`), megadalle.preflight and the groups' schemas,
    so that a bad value in a sweep (`trainer.lr=1e-3,-1`) is not found when its job begins, after the jobs before
    it have trained; a check's warnings are said when its job runs. The jobs are the basic sweeper's: another
    sweeper's (optuna's, ax's) are its own to choose as it runs, and each checks only its own record when it runs."""
    import io
    from contextlib import redirect_stderr

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    from megadalle.cli import compose_errors, error_line
    from megadalle.config.compose import compose_with_choices
    from megadalle.preflight import preflight

    swept = swept_keys(overrides)
    if not swept or not basic(overrides, "hydra/sweeper"):
        return
    try:
        jobs = BasicSweeper.split_arguments(parser().parse_overrides(overrides), None)[0]
    except HydraException:  # a sweep only another sweeper reads (interval()), chosen by a config: its to check
        return
    taken: dict[str, tuple[int, list[str]]] = {}
    for num, job in enumerate(jobs if len(jobs) > 1 else ()):
        try:
            cfg, _ = compose_with_choices(verb, job, extra, primary, keep_hydra=True)
            plugins = cfg.hydra.runtime.choices  # as given, or as a primary config of the user's chose them
            if plugins.get("hydra/sweeper") != "basic":
                return
            here = plugins.get("hydra/launcher") == "basic"
            folder = job_folder(cfg, num)
            with open_dict(cfg):
                del cfg["hydra"]
                home = place_outputs(cfg, verb, job, swept, num, folder)
            check_shared_places(taken, job_places(cfg, verb, home), num, job, swept)
            if not here:
                continue
            if home:
                check_record(home, num, job, swept)
            with redirect_stderr(io.StringIO()):
                preflight(verb, cfg)
            build_groups(verb, cfg)
        except compose_errors() as err:
            raise ConfigError(f"{job_named(num, job, swept)}: {error_line(err)}; no job has run") from None


def basic(overrides: list[str], group: str) -> bool:
    """Whether `overrides` leave hydra's `group` (hydra/sweeper) its basic plugin: not given, or given as `basic`."""
    from megadalle.hydra_app import override_key

    return all(item.partition("=")[2] == "basic" for item in overrides if override_key(item) == group)


def job_places(cfg: DictConfig, verb: str, home: tuple[str, str] | None) -> dict[str, str]:
    """Every place a job writes to as its placed `cfg` says (its own folder, its JOB_PATHS), absolute, each with the
    key that gives it."""
    places = {os.path.abspath(home[0]): home[1]} if home else {}
    for key in JOB_PATHS.get(verb, {}):
        if cfg.get(key) is not None:
            places.setdefault(os.path.abspath(str(cfg[key])), key)
    return places


def check_shared_places(taken: dict[str, tuple[int, list[str]]], places: dict[str, str], num: int,
                        job_overrides: list[str], swept: list[str]) -> None:
    """Refuse job `num` where it writes to a place of an earlier job of the sweep (`taken`, which gets its
    `places`): a path swept with another key is as given in several jobs (`output=a,b image_size=16,32`: `a` in jobs
    0 and 1), the later one's output replacing the earlier one's in silence (prepare), or a training job refused in
    the earlier one's run only after that had trained (`run_dir=`)."""
    for path, key in places.items():
        if path in taken:
            first, overrides = taken[path]
            hint = f"; sweep over {key} alone, or give it one value (a place per job under it)" if key in swept else ""
            raise ConfigError(f"{key} {path} is shared with {job_named(first, overrides, swept)}: each would write "
                              f"over the other{hint}")
    taken.update(dict.fromkeys(places, (num, job_overrides)))


def build_groups(verb: str, cfg: DictConfig) -> None:
    """Each group of `cfg` built by its schema (megadalle.config's SCHEMAS), and the verb's own keys by its
    (VERB_SCHEMAS, as its stage builds them), which check their values: preflight leaves some to the stage
    (`trainer` on synthetic data, generate's `temperature`, plan's `gpus`)."""
    from megadalle.config import build, group_schemas, top_level
    from megadalle.config.verbs import VERB_SCHEMAS

    for group, schema in group_schemas():
        if isinstance(cfg.get(group), DictConfig):
            build(schema, cfg[group], group)
    for schema in VERB_SCHEMAS.get(verb, ()):
        build(schema, top_level(cfg, schema), "")


def job_folder(cfg: DictConfig, num: int) -> str:
    """Job `num`'s folder, `<hydra.sweep.dir>/<hydra.sweep.subdir>`, as hydra's runner will make it."""
    with open_dict(cfg.hydra):
        cfg.hydra.job.num = num
    return os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))
