"""wandb on rank 0: offline by default (sync later with `wandb sync`), resuming the same run.

The run id is created on the first start and stored in every checkpoint's client state; a
resumed run passes it back with resume="allow", so its curves continue the original run's.

The id belongs to the run directory, not to its checkpoints: a copy of a run directory (to branch an
experiment off it) carries the original's checkpoints, and both runs logged into one wandb run, each
overwriting the other's steps. `<run_dir>/wandb_id.json` records the id with the directory it was given to:
its path and its inode. A directory found at another path with the same inode was moved (renamed on its file
system) and keeps its id; one with another inode is a copy and takes a new id, with a note. A move to
another file system is a copy there (no inode survives it) and also takes a new id: one wandb run too many
is better than two runs in one. A run directory without the record (made before it) takes its checkpoint's
id when the checkpoint is its own (`checkpoints/` holds one), a new one when it resumes another run's.
A run that goes back (`resume=<run>/checkpoints/step_N` while a later complete checkpoint is there) takes a new
id too, with a note: wandb ignores every step below the last one a run logged, so the new branch stayed invisible
until it passed the old one's last step.

An id belongs to a branch, and until the branch's first save no checkpoint carries it: the record keeps every id the
directory took with the start that took it (`starts`: the step and the wandb id of the checkpoint resumed). A
checkpoint carrying one of them continues that branch and logs to it; a checkpoint carrying another id (the
original's in a copy, another run's) logs to the id an earlier start from it took, stopped before its first save,
else to a new one. The record held the newest id alone: a run stopped between going back and its first save, then
resumed (`resume=auto`) from the later checkpoint it had gone back from, logged the old branch into the new id.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Mapping

from megadalle.config.train import LoggerConfig
from megadalle.data import atomic
from megadalle.errors import UserError
from megadalle.train import disk_full, distributed
from megadalle.train.callbacks import Callback, RunInfo
from megadalle.train.checkpoint import one_line, tag_of
from megadalle.train.checkpoint_damage import complete_tags
from megadalle.train.signals import STOPPED_EXIT

FORMER_DEFAULT = "https://api.wandb.ai"
"""wandb's default server before CoreWeave's Forge fronted it; the API behind the Forge host of later versions."""


class WandbError(UserError):
    """wandb.init failed (no reachable server, refused credentials); the message says what to do instead."""


def settings_base_url(env: Mapping[str, str], home: Path) -> str | None:
    """The `base_url` of wandb's user settings (WANDB_CONFIG_DIR, else ~/.config/wandb), if one is set."""
    import configparser

    folder = Path(env["WANDB_CONFIG_DIR"]) if env.get("WANDB_CONFIG_DIR") else home / ".config" / "wandb"
    parser = configparser.ConfigParser()
    try:
        parser.read(folder / "settings")
    except configparser.Error:
        return None
    return parser.get("default", "base_url", fallback=None)


def default_base_url() -> str:
    """The server the installed wandb talks to when nothing names one, from its own module (no network): it moved
    from api.wandb.ai to api.forge.coreweave.com, and `wandb login` keys its ~/.netrc entry by it."""
    try:
        from wandb.sdk.lib import urls
    except ImportError:
        return FORMER_DEFAULT
    return getattr(urls, "DEFAULT_BASE_URL", FORMER_DEFAULT)


def base_url(env: Mapping[str, str]) -> str:
    """The server wandb logs to: WANDB_BASE_URL, else the `base_url` `wandb login --host` saved, else its default."""
    home = Path(env.get("HOME", "~")).expanduser()
    return env.get("WANDB_BASE_URL") or settings_base_url(env, home) or default_base_url()


def netrc_machines(url: str) -> set[str]:
    """The .netrc machines wandb takes a key for `url` from: its host (with the port, as `wandb login` writes it,
    or without), and for a Forge host the W&B API host behind it (wandb falls back to it: an older wandb's login)."""
    from urllib.parse import urlsplit

    urls = [url]
    try:
        from wandb.sdk.lib.urls import forge_upstream_url

        urls.append(forge_upstream_url(url))
    except ImportError:  # a wandb from before Forge: its default is FORMER_DEFAULT
        pass
    parts = [urlsplit(u) for u in urls]
    return {name for p in parts for name in (p.netloc, p.hostname) if name}


def credentials_found(environ: Mapping[str, str] | None = None) -> bool:
    """Whether wandb will find credentials without prompting, read the way `wandb login` documents its lookup,
    without the network: WANDB_API_KEY, an identity token file (WANDB_IDENTITY_TOKEN_FILE), or the .netrc entry
    `wandb login` writes for the server of `base_url` (NETRC, else ~/.netrc or ~/_netrc). A .netrc this cannot
    parse counts as found: wandb decides then."""
    import netrc

    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    home = Path(env.get("HOME", "~")).expanduser()
    machines = netrc_machines(base_url(env))
    files = [Path(env["NETRC"])] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in (f for f in files if f.is_file()):
        try:
            found = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError):
            return True
        if any((entry := found.authenticators(machine)) and entry[2] for machine in machines):
            return True
    return False


ID_RECORD = "wandb_id.json"


def directory_identity(run_dir: Path) -> dict[str, Any]:
    """What tells this run directory from a copy of it: its resolved path and its inode on its file system."""
    stat = run_dir.stat()
    return {"path": str(run_dir.resolve()), "device": stat.st_dev, "inode": stat.st_ino}


def read_record(record: Path) -> dict[str, Any] | None:
    """The id record `run_id` wrote, or None where there is none or it cannot be read (as if none: a new id)."""
    try:
        saved = json.loads(record.read_text())
        return saved if {"id", "path", "device", "inode"} <= set(saved) else None
    except (OSError, ValueError, TypeError):
        return None


def later_checkpoint(run_dir: Path, step: int | None) -> str | None:
    """The newest complete checkpoint of the run past `step`, the one it resumes from: there when the run goes back
    (`resume=<run>/checkpoints/step_N`), until its first save sets the later ones aside (checkpoints/abandoned/)."""
    if step is None:
        return None
    later = [tag for tag in complete_tags(run_dir / "checkpoints") if tag > tag_of(step)]
    return later[-1] if later else None


def run_id(run_dir: Path, checkpoint_id: str | None, resumed_step: int | None = None) -> tuple[str, str | None]:
    """The wandb id of the run in `run_dir`, resumed at `resumed_step` from a checkpoint carrying `checkpoint_id`
    (the module docstring says how it is chosen), and a note when it is not the one its checkpoint carries; records
    it with the directory's identity and the start that took it."""
    here = directory_identity(run_dir)
    record = run_dir / ID_RECORD
    saved = read_record(record)
    start = [resumed_step, checkpoint_id]
    copied = saved is not None and saved["path"] != here["path"] and (
        (saved["device"], saved["inode"]) != (here["device"], here["inode"]))
    taken = {} if saved is None or copied else starts(saved, start)
    again = [taken_id for taken_id, taken_at in taken.items() if taken_at == start]
    later = later_checkpoint(run_dir, resumed_step)
    note, fresh = None, False
    if checkpoint_id in taken:
        wandb_id = checkpoint_id
    elif again:
        wandb_id = again[-1]
    elif saved is None and checkpoint_id is not None and any((run_dir / "checkpoints").glob("step_*")):
        wandb_id = checkpoint_id
    else:
        wandb_id, fresh = secrets.token_hex(4), True
        if copied:
            note = (f"{run_dir} is a copy of the run in {saved['path']} (or was moved to another file system): it "
                    f"logs to a new wandb run {wandb_id}, not to {saved['id']}")
        elif checkpoint_id is not None and later is None:  # going back in its own run is said below
            note = (f"{run_dir} resumes another run's checkpoint: it logs to a new wandb run {wandb_id}, not to "
                    f"{checkpoint_id}")
    if note is None and later is not None:
        not_to = "" if fresh else f", not to {wandb_id}"  # the id its later branch logs to (a fresh one: none yet)
        wandb_id = wandb_id if fresh else secrets.token_hex(4)
        note = (f"{run_dir} goes back to {tag_of(resumed_step)} from its {later}: it logs to a new wandb run "
                f"{wandb_id}{not_to} (wandb ignores the steps below the last one a run logged)")
    now = {"id": wandb_id, **here, "starts": {**taken, wandb_id: taken.get(wandb_id, start)}}
    if saved != now:
        atomic.write_json(record, now)
    return wandb_id, note


def starts(saved: dict[str, Any], start: list) -> dict[str, list]:
    """{id: [step, checkpoint's id] of the start that took it} of a record of this directory. A record written before
    them holds its id alone, which then stands for any `start` (it was taken whatever the checkpoint)."""
    taken = saved.get("starts")
    return dict(taken) if isinstance(taken, dict) else {saved["id"]: start}


def start_failure(err: Exception, mode: str, run_dir: Path) -> str:
    """One line for wandb.init's own error `err`: the server, wandb's first line, and how to train on anyway."""
    said = str(err).strip().splitlines()
    first = said[0][:300] if said else type(err).__name__
    if mode != "online":
        return f"logger.mode={mode}: wandb could not start ({first}); logger=none trains without wandb"
    return (f"logger.mode=online: wandb could not start a run on {base_url(os.environ)} ({first}); without a "
            f"reachable server log with logger.mode=offline and upload later with "
            f"`wandb sync {run_dir}/wandb/offline-run-*`")


def import_failure(mode: str, err: Exception) -> str:
    """The line for a wandb that does not import: not installed (a container built without it, pip --no-deps), or
    broken (a protobuf of another major version makes `import wandb` raise TypeError)."""
    return (f"logger.mode={mode}: wandb does not import ({one_line(err)}); install it (pip install 'wandb>=0.17'), "
            "or logger=none trains without wandb")


class Wandb(Callback):
    def __init__(self, cfg: LoggerConfig):
        self.cfg = cfg
        self.run = None
        self.run_id: str | None = None
        self.exit_code = 1
        """What wandb records as the run's end (`ending`): 0 done, 1 failed, STOPPED_EXIT stopped for a signal (with
        mark_preempting, as wandb asks of a job that is requeued). A finish without one recorded 0 for a failed run."""

    def start(self, info: RunInfo) -> None:
        """wandb.init on rank 0. When it fails (on a compute node without internet, after wandb's 90 s timeout), or
        the disk does not take the id record (disk_full), every rank raises rank 0's error: the others wait in the
        broadcast for it, so rank 0 raising alone left them there until the group's timeout."""
        failure, bug = self._init(info) if info.rank == 0 else (None, None)
        if info.rank != 0:  # it logs nothing
            self.run_id = info.wandb_id or secrets.token_hex(4)
        if self.cfg.mode != "disabled":  # only then do the others wait for rank 0's word
            failure = distributed.broadcast_object(failure)
        if bug is not None:  # a bug: rank 0 keeps its traceback, the others stop with its line
            raise bug
        if failure is not None:
            raise failure

    def _init(self, info: RunInfo) -> tuple[UserError | None, Exception | None]:
        """Rank 0's id and wandb.init; the error every rank raises on a failure (the id record the disk did not take:
        RunFileError, which the loop stops every rank on; wandb's own error: its line; another: a bug, returned too,
        to raise once the other ranks have its line)."""
        # The id is kept with logger=none too, for a later run that logs; the note is said only where a wandb run is
        # logged to (with logger=none it spoke of a run nothing goes to).
        try:
            with disk_full.one_line(Path(info.run_dir) / ID_RECORD):
                self.run_id, note = run_id(Path(info.run_dir), info.wandb_id, info.start_step)
        except disk_full.RunFileError as err:
            return err, None
        if self.cfg.mode == "disabled":
            return None, None
        if note is not None:
            print(f"[wandb] {note}", file=sys.stderr, flush=True)
        try:
            import wandb
        except Exception as err:  # preflight's check_logger says so first; here for a caller of the loop itself
            return WandbError(import_failure(self.cfg.mode, err)), None
        # wandb's debug log is a logging handler, and wandb copies stderr into its run: on a full disk each failed
        # write printed logging's "--- Logging error ---" traceback, which wandb copied and failed to write again
        # (13,800 lines before the run's one line saying the disk is full). Errors of logging are dropped instead.
        logging.raiseExceptions = False
        try:
            name = self.cfg.name or "/".join(Path(info.run_dir).resolve().parts[-2:])
            self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, name=name,
                                  mode=self.cfg.mode, dir=str(info.run_dir), id=self.run_id, resume="allow",
                                  config=info.config)
        except wandb.errors.Error as err:
            return WandbError(start_failure(err, self.cfg.mode, Path(info.run_dir))), None
        except OSError as err:  # the folder's, not a bug: another user's wandb/ in a shared run directory, a file
            return WandbError(f"logger.mode={self.cfg.mode}: wandb cannot write {Path(info.run_dir) / 'wandb'} "
                              f"({one_line(err)}); make it writable, or logger=none trains without wandb"), None
        except Exception as err:
            return WandbError(f"rank 0 failed to start wandb: {one_line(err)}"), err
        return None, None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def media(self, step: int, values: dict[str, Any]) -> None:
        if self.run is not None and values:
            from megadalle.train.media import Picture

            self.run.log({k: v.to_wandb() if isinstance(v, Picture) else v for k, v in values.items()}, step=step)

    def ending(self, failing: bool, stopped: bool) -> None:
        self.exit_code = 1 if failing else STOPPED_EXIT if stopped else 0

    def end(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            if self.exit_code == STOPPED_EXIT and hasattr(run, "mark_preempting"):
                run.mark_preempting()
            run.finish(exit_code=self.exit_code)
