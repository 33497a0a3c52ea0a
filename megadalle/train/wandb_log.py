"""wandb on rank 0: offline by default (sync later with `wandb sync`), resuming the same run.

The run id is created on the first start and stored in every checkpoint's client state; a
resumed run passes it back with resume="allow", so its curves continue the original run's.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Mapping

from megadalle.config.train import LoggerConfig
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


class Wandb(Callback):
    def __init__(self, cfg: LoggerConfig):
        self.cfg = cfg
        self.run = None
        self.run_id: str | None = None

    def start(self, info: RunInfo) -> None:
        self.run_id = info.wandb_id or secrets.token_hex(4)
        if info.rank != 0 or self.cfg.mode == "disabled":
            return
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
