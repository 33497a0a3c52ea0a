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
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Mapping

from megadalle.config.train import LoggerConfig
from megadalle.data import atomic
from megadalle.train.callbacks import Callback, RunInfo


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


def credentials_found(environ: Mapping[str, str] | None = None) -> bool:
    """Whether wandb will find credentials without prompting, read the way `wandb login` documents its lookup,
    without wandb or the network: WANDB_API_KEY, an identity token file (WANDB_IDENTITY_TOKEN_FILE), or the
    .netrc entry `wandb login` writes for the host of WANDB_BASE_URL or of the `base_url` that `wandb login
    --host` saves in wandb's settings (a self-hosted server) (NETRC, else ~/.netrc or ~/_netrc). A .netrc this
    cannot parse counts as found: wandb decides then."""
    import netrc
    from urllib.parse import urlparse

    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    home = Path(env.get("HOME", "~")).expanduser()
    host = urlparse(env.get("WANDB_BASE_URL") or settings_base_url(env, home) or "https://api.wandb.ai").hostname
    files = [Path(env["NETRC"])] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in (f for f in files if f.is_file()):
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            return True
        if entry and entry[2]:
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


def run_id(run_dir: Path, checkpoint_id: str | None) -> tuple[str, str | None]:
    """The wandb id of the run in `run_dir` (the module docstring says how it is chosen), and a note when it is not
    the one its checkpoint carries; records it with the directory's identity."""
    here = directory_identity(run_dir)
    record = run_dir / ID_RECORD
    saved = read_record(record)
    note = None
    if saved is not None:
        same = saved["path"] == here["path"] or (saved["device"], saved["inode"]) == (here["device"], here["inode"])
        wandb_id = saved["id"] if same else secrets.token_hex(4)
        if not same:
            note = (f"{run_dir} is a copy of the run in {saved['path']} (or was moved to another file system): it "
                    f"logs to a new wandb run {wandb_id}, not to {saved['id']}")
    elif checkpoint_id is not None and not any((run_dir / "checkpoints").glob("step_*")):
        wandb_id = secrets.token_hex(4)
        note = (f"{run_dir} resumes another run's checkpoint: it logs to a new wandb run {wandb_id}, not to "
                f"{checkpoint_id}")
    else:
        wandb_id = checkpoint_id or secrets.token_hex(4)
    if saved != {"id": wandb_id, **here}:
        atomic.write_json(record, {"id": wandb_id, **here})
    return wandb_id, note


class Wandb(Callback):
    def __init__(self, cfg: LoggerConfig):
        self.cfg = cfg
        self.run = None
        self.run_id: str | None = None

    def start(self, info: RunInfo) -> None:
        if info.rank != 0:  # it logs nothing
            self.run_id = info.wandb_id or secrets.token_hex(4)
            return
        # The id is kept with logger=none too, for a later run that logs; the note is said only where a wandb run is
        # logged to (with logger=none it spoke of a run nothing goes to).
        self.run_id, note = run_id(Path(info.run_dir), info.wandb_id)
        if self.cfg.mode == "disabled":
            return
        if note is not None:
            print(f"[wandb] {note}", file=sys.stderr, flush=True)
        import wandb

        self.run = wandb.init(project=self.cfg.project, entity=self.cfg.entity, name=self.cfg.name,
                              mode=self.cfg.mode, dir=str(info.run_dir), id=self.run_id, resume="allow",
                              config=info.config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def media(self, step: int, values: dict[str, Any]) -> None:
        if self.run is not None and values:
            from megadalle.train.media import Picture

            self.run.log({k: v.to_wandb() if isinstance(v, Picture) else v for k, v in values.items()}, step=step)

    def end(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
