"""Compose a verb's config from `conf/`: the one place that knows where the YAML files live.

The CLI, the demo and the tests all build configs through `compose`, so a stage called from
Python gets exactly the config the same overrides would give on the command line. Keys written
`???` in the YAML stay required (megadalle.config.required) even where the schema has a default.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict


def conf_dir() -> Path:
    """`conf/` beside the package in a checkout, or the copy installed inside the package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/ directory found beside {here}")


def compose(verb: str, overrides: list[str] | None = None) -> DictConfig:
    """The verb's config with `overrides` applied, as a DictConfig (also used by tests and demo)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from megadalle.config import register_schemas
    from megadalle.config.required import restore

    register_schemas()
    GlobalHydra.instance().clear()
    overrides = list(overrides or [])
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=verb):
        cfg = hydra_compose(config_name=verb, overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    restore(cfg, conf_dir(), verb, choices, overrides)
    return cfg
