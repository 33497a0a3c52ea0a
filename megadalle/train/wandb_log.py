"""wandb on rank 0: offline by default (sync later with `wandb sync`), resuming the same run.

The run id is created on the first start and stored in every checkpoint's client state; a
resumed run passes it back with resume="allow", so its curves continue the original run's.
"""
from __future__ import annotations

import secrets
from typing import Any

from megadalle.config.train import LoggerConfig
from megadalle.train.callbacks import Callback, RunInfo


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
