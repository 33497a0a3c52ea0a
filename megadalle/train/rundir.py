"""One directory per run, stable across reruns, chosen once by rank 0 and shared with every rank.

Rerunning a command resumes it: without an explicit `run_dir` the directory is
`<out_dir>/<task>/<name>` (name `default` unless given), so the same command finds the same
checkpoints. Inside a Slurm job without a `name`, the job id stands in for it (`slurm-<id>`): a
requeued job keeps its id and resumes, while two jobs never share a directory by accident.

A run directory belongs to one config: `run.json` records it, and a rerun whose config differs in a
key that changes what is trained is refused before anything starts, naming the keys. The keys in
RESUMABLE may differ: they extend the run (trainer.steps), change how it is recorded (logging,
checkpoint cadence, wandb, validation, sample grids), where things live (run_dir, out_dir, the exported
weights), or memory and speed without
changing the maths (micro_batch/grad_accum at the same global batch, which the checkpoint's data
identity check guards; loader workers; activation checkpointing; the attention backend). So may the keys of
MATTERS_IN where they do nothing in either config's layout (the bf16-only dtypes in an fp32 run, ZeRO-3's
sub-group size under ZeRO 0-2).
The data may move (`data.shards`: a copy on node-local disk per job): the checkpoint's data identity,
a fingerprint of the shards' names, counts and sizes, refuses a resume on other data whatever its path
(train/data_identity.py check_data_identity). The tokenizer (DIGEST_KEYS) is compared by content: run.json records
its sha256, so a copy elsewhere resumes and one retrained in place (same path, other ids) is refused. A
run.json without digests (written before them) compares the tokenizer by path: `out/tok.model`,
`./out/tok.model` and its absolute path are one value there (`same_path`), another path is refused, as
nothing says its content is the same. The paths a later verb reads (PATH_KEYS: the tokenizer, the dVAE, the
data) are recorded absolute (`recorded`), as the folder the run was started from resolved them; a run.json from
before holds them as typed, which only that folder reads right (`started_here`). A rerun that changes the learning
rate at the step it resumes from (`trainer.steps` reshapes the decay) is told so, with the `trainer.decay_steps`
that keeps the old curve.

A run directory belongs to one run at a time: rank 0 holds an exclusive `flock` on `<run_dir>/.lock` from
before it reads any checkpoint until the run ends (RunLock; folder_lock.py says how it holds). Two jobs on one
directory would otherwise resume from each other's checkpoints, set aside or prune the other's newer ones and log
the same steps twice; the second is refused, naming the holder (host, pid, Slurm job). A run directory moved or
removed under its run stops it at the next save (`moved_away`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import operator
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from megadalle.data.digest import sha256
from megadalle.errors import UserError
from megadalle.folder_lock import LOCK, FolderLock, held_on
from megadalle.train.micro_batch_objective import micro_batch_objective, micro_batch_refusal

RUN_JSON = "run.json"
RESUMABLE = (
    "run_dir", "out_dir", "name", "resume", "new_data", "weights",
    "trainer.steps", "trainer.decay_steps", "data.shards", "trainer.checkpoint_every", "trainer.keep_checkpoints",
    "trainer.log_every", "trainer.media_every", "dvae_weights", "media_captions", "media_samples", "preview",
    "trainer.eval_every", "trainer.eval_batches", "data.val_shards", "trainer.grad_accum",
    "logger.*", "data.num_workers", "data.prefetch_factor", "usage_window",
    "model.activation_checkpointing", "model.attention_backend", "deepspeed.overlap_comm",
    "deepspeed.reduce_bucket_size", "deepspeed.timeout_minutes", "deepspeed.zero3_window_blocks",
    "trainer.keep_freed_memory", "trainer.fused_optimizer",
)
"""Keys (or `group.*`) a rerun may change and still resume the run directory. Validation (its data too) and
sample grids among them: both run on a forked RNG and their own data, so switching them on or off at a resume
leaves the training exactly as it was (tests/cli/test_rerun.py). train-dvae's `preview` is the size of its
logged reconstruction grid, of images already trained on, and its `usage_window` decides only which codes the
`dead_codes` metric counts (each code's last use is checkpointed whatever the window); `weights` (train-dvae,
train-clip) is where the finished run is exported. `data.shards` may move: the checkpoint's data identity refuses other data
(the module docstring). `trainer.decay_steps` like `trainer.steps` reshapes the decay, with a warning where it
changes the learning rate at the resume. `deepspeed.timeout_minutes` bounds waits (a resume on another rank
count may need it raised while rank 0 converts a large checkpoint), `zero3_window_blocks` how many parameters
ZeRO-3 holds gathered, `trainer.keep_freed_memory` the CPU allocator: none changes a number. `trainer.fused_optimizer`
picks torch's kernel for the same AdamW and its same state (a user whose fused kernel fails on a new machine switches
it for the running run), changing the weights at rounding level, as `model.attention_backend` does. Not
`zero3_sub_group_blocks`: DeepSpeed saves ZeRO-3's optimizer state per sub-group and loads it only into as many
sub-groups (under ZeRO 0-2, which have none, it may change: MATTERS_IN). `trainer.micro_batch` may change except
where it is part of the objective: CLIP's contrast, a dVAE's usage term (MATTERS_IN)."""


def may_train_bf16(flat: dict) -> bool:
    """Whether the run of flattened config `flat` may train in bf16: `auto` does on a GPU, and a run directory may move
    between machines, so only `fp32` is known to leave the bf16-only keys without effect."""
    return flat.get("trainer.precision") != "fp32"


MATTERS_IN: dict[str, Callable[[dict], bool]] = {
    "trainer.micro_batch": lambda flat: micro_batch_objective(flat) is not None,
    "deepspeed.grad_accum_dtype": may_train_bf16,
    "deepspeed.communication_dtype": may_train_bf16,
    "deepspeed.zero3_sub_group_blocks": lambda flat: flat.get("deepspeed.zero_stage", 3) == 3,
    "data.tokenizer": lambda flat: flat.get("data.source") != "synthetic",
}
"""Keys that change the training only in some layouts, each with whether it does in the run of a flattened config. A
rerun may change one where it does in neither run.json's config nor its own (`inert`): an fp32 run accumulates and
reduces its gradients in fp32 whatever the bf16-only dtypes say, DeepSpeed has optimizer sub-groups under ZeRO-3
only, and synthetic data reads no tokenizer (a run recorded with one, before preflight refused it, resumes without
it). A config that does not say (no trainer.precision or deepspeed.zero_stage) is taken for one where the key matters;
one without clip.negatives is no CLIP run (an older CLIP run.json reads as its ADDED_KEYS value). `trainer.micro_batch`
changes nothing else at the same global batch (the checkpoint's layout guards it): under CLIP's micro_batch negatives
the same 8 x 1 update resumed as 4 x 2 contrasted half the pairs, its loss and val/loss ln 2 lower, in silence; a
dVAE's usage term resumed at micro_batch 8 after 4 drifted from the uninterrupted run's loss from its first update.
The predicates read keys that are not RESUMABLE, so a resume never moves a run into a layout where a key that changed
without a refusal matters."""
PATH_KEYS = ("data.shards", "data.val_shards", "data.tokenizer", "tokenizer", "dvae_weights", "clip_weights", "weights")
"""The keys naming a file or folder that run.json records absolute (`recorded`): export, generate, evaluate and
`load_run` read the tokenizer, dVAE and CLIP from there, often from another folder than the run's, where a relative
path named another file (a swapped dVAE, in silence). A rerun compares them as paths (`same_path`): the relative
spelling it was started with still names the recorded file from the same folder."""
DIGEST_KEYS = ("data.tokenizer", "tokenizer")
"""Keys whose file's sha256 run.json records (`digests`) and a rerun compares: the tokenizer, whose ids the model
learnt (`train`'s data.tokenizer, `train-clip`'s tokenizer). The same content may lie elsewhere now; without a
recorded digest the paths are compared (`same_path`)."""
CODES_DVAE = "data.shards.dvae"
"""run.json's `sha256` key holding the digest of the dVAE whose codes data.shards hold, as their index.json meta
records it (`encode`: encode.weights_digest, of the dVAE's tensors), where they record one (`digests`): export and the
sampling verbs compare the dVAE they decode with it (sampling/dvae_record.py). A rerun does not compare it: the
checkpoint's data identity refuses codes of another dVAE (train/data_identity.py CODES_KEYS)."""


KEPT_WHEN_UNSET = ("dvae_weights",)
"""RESUMABLE keys that later verbs read from run.json (run_pieces.RECORDED_PIECES) and that a rerun leaving them unset
keeps as recorded (`kept_when_unset`). `train`'s dvae_weights only draws the sample grids, so a finished run extended
without it trained as before, but recorded null: `generate weights=<run>` and `export` no longer found the run's dVAE
and asked for one. A rerun that names another dVAE records that one (preflight checks it against the codes)."""


def kept_when_unset(record: Path, config: dict) -> dict:
    """`config` with each KEPT_WHEN_UNSET key that it leaves None taken from the run.json at `record`, where that
    names one."""
    if not record.is_file():
        return config
    saved = json.loads(record.read_text()).get("config", {})
    return {**config, **{key: saved[key] for key in KEPT_WHEN_UNSET
                       if key in config and config[key] is None and saved.get(key)}}


class RunDirError(UserError):
    """A rerun whose config does not match the run directory's."""


def default_path(out_dir: str, task: str, name: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """`<out_dir>/<task>/<name>`; without a name `default`, or `slurm-<job id>` inside a Slurm job. (A `-m` sweep
    over `name=1,2` gives hydra's ints.)"""
    env = os.environ if environ is None else environ
    if not name:
        job = env.get("SLURM_JOB_ID")
        name = f"slurm-{job}" if job else "default"
    return Path(str(out_dir)) / task / str(name)


def path_for(run_dir: str | None, out_dir: str, task: str, name: str | None,
             environ: Mapping[str, str] | None = None) -> Path:
    """The run directory: the explicit `run_dir`, else the default one."""
    return Path(str(run_dir)) if run_dir else default_path(out_dir, task, name, environ)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of nested dicts (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


ADDED_KEYS: dict[str, Callable[[dict], Any]] = {
    "clip.negatives": lambda now: now["clip.negatives"] if now.get("trainer.grad_accum") == 1 else "micro_batch",
}
"""Keys a task's config gained after runs recorded theirs in run.json: from the current flattened config, the value
an older run ran under. Without this a run.json lacking the key (None there) refused every value a user can give.
CLIP contrasted each micro-batch alone before `clip.negatives`, which is the whole update's contrast when there
is no accumulation."""


def resumable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1])) for allowed in RESUMABLE)


def inert(key: str, saved: dict, current: dict) -> bool:
    """Whether `key` changes nothing in the runs of both flattened configs (MATTERS_IN)."""
    matters = MATTERS_IN.get(key)
    return matters is not None and not matters(saved) and not matters(current)


def same_path(saved: Any, current: Any) -> bool:
    """Two spellings of one path: equal once normalised (`out/shards/`, `./out/shards`), or naming the same
    place from here (relative against absolute, `..`, symlinks, another mount of the same file). A path
    recorded on another machine that is not there now compares by its normalised spelling only."""
    if not (isinstance(saved, str) and isinstance(current, str)):
        return saved == current
    if os.path.normpath(saved) == os.path.normpath(current):
        return True
    a, b = Path(saved).expanduser(), Path(current).expanduser()
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def config_diff(saved: dict, current: dict, same_content: frozenset[str] = frozenset()) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every key that differs and may not change on resume. The DIGEST_KEYS
    in `same_content` name a file whose content is the run's, wherever it lies now; the other PATH_KEYS compare as
    paths. A key the saved config lacks because it was added since (ADDED_KEYS) compares as the value the run ran
    under. The saved verb-level keys are read as `config.typed_container` reads the current ones: a run.json from
    before it holds `seed=${oc.env:SEED}` as the text '7', which differed from 7 and refused the same command (a
    value the schema refuses stays as saved, and differs)."""
    from megadalle.config import ConfigError, build, literal
    from megadalle.config.train import RunConfig

    def typed(key: str, value: Any) -> Any:
        try:
            return getattr(build(RunConfig, {key: literal(value)}, ""), key)
        except ConfigError:
            return value

    run_keys = {field.name for field in dataclasses.fields(RunConfig)}
    a, b = flatten(saved), flatten(current)
    a.update({key: typed(key, a[key]) for key in run_keys & set(a)})
    a.update({key: implied(b) for key, implied in ADDED_KEYS.items() if key not in a and key in b})
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b))
            if not resumable(key) and key not in same_content and not inert(key, a, b)
            and not (same_path if key in PATH_KEYS else operator.eq)(a.get(key), b.get(key))]


def recorded(config: dict) -> dict:
    """`config` as run.json records it: each PATH_KEYS value that is a relative path made absolute against the
    current folder (against which the run reads it), the rest as typed (no symlink resolved)."""
    base = Path.cwd()

    def walk(node: dict, prefix: str) -> dict:
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                out[key] = walk(value, f"{dotted}.")
            elif dotted in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
                out[key] = str(base / value)
            else:
                out[key] = value
        return out

    return walk(config, "")


def started_here(run: Path, config: dict) -> bool:
    """Whether the current folder is the one the run in `run` was started from, as far as its recorded `config`
    tells: its run directory was given relative (`run_dir`, or `out_dir`/<task>/<name>) and names `run` from here.
    What a run.json written before `recorded` needs to read its relative paths: nothing else says where they were
    relative to."""
    run = run.resolve()
    run_dir, out_dir = config.get("run_dir"), str(config.get("out_dir") or "outputs")
    where = Path(str(run_dir)) if run_dir else Path(out_dir) / run.parent.name / run.name
    if where.is_absolute():
        return False
    try:
        return os.path.samefile(where, run)
    except OSError:
        return False


def digests(config: dict) -> dict[str, str]:
    """{key: sha256} of the DIGEST_KEYS files that `config` names (those that exist): what a rerun compares."""
    flat = flatten(config)
    return {key: sha256(flat[key]) for key in DIGEST_KEYS
            if isinstance(flat.get(key), str) and Path(flat[key]).is_file()}


def recorded_digests(config: dict) -> dict[str, str]:
    """run.json's `sha256`: `digests`, and under CODES_DVAE the digest of the dVAE that encoded the token shards
    where they record one (export and generate check the dVAE against it; a rerun leaves it to the checkpoint's
    data identity, so `check_config` does not read the index for it)."""
    codes = codes_dvae(flatten(config))
    return digests(config) if codes is None else {**digests(config), CODES_DVAE: codes}


def codes_dvae(flat: dict) -> str | None:
    """The `dvae` that the index.json meta of the flattened config's data.shards records; None for synthetic data,
    image shards, and token shards encoded elsewhere or before the record."""
    from megadalle.data.index import ShardIndex

    shards = flat.get("data.shards")
    if flat.get("data.source", "shards") != "shards" or not isinstance(shards, str):
        return None
    index = ShardIndex.readable(shards)
    digest = None if index is None else index.meta.get("dvae")
    return digest if isinstance(digest, str) else None


def check_config(path: Path, config: dict,
                 options: Callable[[dict, list[tuple[str, Any, Any]]], list[str]] = lambda saved, diff: []) -> None:
    """Refuse to reuse `path` when its run.json records a config that differs where it matters, or a tokenizer
    whose contents have changed since. `options(saved config, diff)`: the group options (`deepspeed=zero1`) that
    give the run's values, for the refusal: a user who typed `deepspeed=zero2` was told of `deepspeed.zero_stage`."""
    record = path / RUN_JSON
    if not record.is_file():
        return
    saved = json.loads(record.read_text())
    now = digests(config)
    recorded = saved.get("sha256", {})
    diff = config_diff(saved.get("config", {}), config,
                       frozenset(key for key in recorded if key in now and now[key] == recorded[key]))
    if changed := next(((old, new) for key, old, new in diff if key == "trainer.micro_batch"), None):
        raise RunDirError(micro_batch_refusal(path, flatten(saved.get("config", {})), *changed))
    if diff:
        shown = ", ".join(f"{key} ({old!r} there, {new!r} now)" for key, old, new in diff[:5])
        more = f" and {', '.join(key for key, _, _ in diff[5:])}" if len(diff) > 5 else ""
        given = options(saved.get("config", {}), diff)
        sets = f" ({' '.join(given)} {'sets' if len(given) == 1 else 'set'} them)" if given else ""
        if not saved_any(path):  # killed before its first save (an OOM, a divergence): nothing to resume
            raise RunDirError(f"{path} holds the start of a run with another config that saved no checkpoint: "
                              f"{shown}{more}; remove {path} to start it over with these values, rerun with the same "
                              f"values{sets} to start it again, or start a new run with name=<new name> (or run_dir=)")
        raise RunDirError(f"{path} holds a run with another config: {shown}{more}; rerun with the same values{sets} "
                          f"to resume it, or start a new run with name=<new name> (or run_dir=)")
    for key, digest in recorded.items():
        if key in now and now[key] != digest:
            raise RunDirError(f"{key}={flatten(config)[key]}: not the tokenizer the run in {path} trained with "
                              f"(sha256 {now[key][:12]} now, {digest[:12]} in its run.json: changed since, it gives "
                              f"the captions other ids); give the run its tokenizer back, or start a new run with "
                              f"name=<new name> (or run_dir=)")


def saved_any(path: Path) -> bool:
    """Whether the run in `path` began to save a checkpoint (a step_* folder, complete or not, or one set aside)."""
    from megadalle.train.checkpoint import ABANDONED, step_dirs

    checkpoints = path / "checkpoints"
    return bool(step_dirs(checkpoints) or step_dirs(checkpoints / ABANDONED))


def resume_step(path: Path, resume: str) -> int | None:
    """The step a rerun into run directory `path` resumes from (`resume` as the run reads it), or None: a fresh
    start, or a checkpoint the run itself will refuse with a reason. Quietly: the run says, when it resumes,
    which checkpoint it falls back to."""
    from megadalle.train.checkpoint import TAG, CheckpointError
    from megadalle.train.checkpoint_choice import resolve

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            found = resolve(resume, path / "checkpoints")
    except CheckpointError:
        return None
    match = TAG.match(found.name) if found is not None else None
    return int(match[1]) if match else None


class RunLock(FolderLock):
    """The exclusive hold of one run on its directory (the module docstring says why and where it holds)."""

    def __init__(self, path: Path | None = None, environ: Mapping[str, str] | None = None):
        """Take the lock of run directory `path` (None: hold nothing, as ranks other than 0 do)."""
        super().__init__(path, RunDirError, str(path), "start a new run with name=<new name> (or run_dir=)", "run",
                         environ)


def moved_away(path: Path) -> str | None:
    """Rank 0, before a save into run directory `path`: why the run may not write there, in one line, when `path`
    is no longer the directory it locked (renamed or removed since; `FolderLock.lost`): a save by path recreated
    `<path>/checkpoints` alone, without run.json or a lock, and the run ended "finished" with its run.json,
    metrics and earlier checkpoints elsewhere. None while it is (or the file system could not lock it)."""
    lock = held_on(path)
    if lock is None or not lock.lost():
        return None
    return (f"the run directory {path} was moved or removed while the run was in it ({path / LOCK} is no longer the "
            "file it locked): the run stops at this checkpoint, writing nothing more at its old path; put the "
            "directory back (or rerun with run_dir= where it is now), then rerun the same command to resume")


def choose(run_dir: str | None, out_dir: str, name: str, rank: int,
           run_name: str | None = None) -> tuple[Path, RunLock]:
    """The run directory every rank agrees on (created and locked by rank 0; `name` is the task's), and this
    rank's RunLock. A run refused the lock stops on every rank with the same line (none waits in a collective), and
    so does a run whose ranks do not all see the directory rank 0 made (shared_dir.py)."""
    from megadalle.train.distributed import broadcast_object
    from megadalle.train.shared_dir import check_token, make_token

    path, lock, error, token = None, RunLock(), None, None
    if rank == 0:
        path = path_for(run_dir, out_dir, name, run_name)
        path.mkdir(parents=True, exist_ok=True)
        path = str(path.resolve())
        try:
            lock = RunLock(Path(path))
            token = make_token(Path(path))
        except RunDirError as err:
            error = str(err)
        except OSError as err:
            error = f"cannot write in the run directory {path}: {os.strerror(err.errno) if err.errno else err}"
    path, error, token = broadcast_object((path, error, token))
    if error is None:
        error = check_token(Path(path), token, rank)
    if error is not None:
        lock.release()
        raise RunDirError(error)
    return Path(path), lock
