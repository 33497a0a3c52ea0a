"""Keys written `???` in the YAML files stay required, even where the schema has a default.

Hydra merges a group's YAML over its dataclass schema, and OmegaConf keeps the destination's value
when the source is `???`: `data/tokens.yaml`'s `tokenizer: ???` over DataConfig's `tokenizer: None`
comes out as null, so `train` without `data.tokenizer` used to fail late, after DeepSpeed started.
`restore` marks such keys missing again unless the command line (or the verb's own YAML, merged
after its groups) gave them a value; `missing` then lists what the user still has to give.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from megadalle.config import ConfigError


def _yaml_keys(path: Path) -> tuple[set[str], set[str]]:
    """(dotted keys written `???`, dotted keys given a value) in the YAML file at `path`."""
    import yaml

    missing_keys, set_keys = set(), set()

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            if value == "???":
                missing_keys.add(full)
                continue
            set_keys.add(full)
            if isinstance(value, dict):
                walk(value, full + ".")

    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        walk(data, "")
    return missing_keys, set_keys


def override_keys(overrides: list[str]) -> set[str]:
    """The dotted keys a hydra override list assigns (`a.b=1`, `+a.b=1`, `++a.b=1`)."""
    keys = set()
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and not key.startswith("~"):
            keys.add(key.lstrip("+").split("@")[0])
    return keys


def required_keys(conf: Path, verb: str, choices: dict[str, str | None]) -> set[str]:
    """Keys written `???` in the verb's YAML or in the group options it composed, less the group
    keys the verb's YAML sets (it is merged after its groups)."""
    required, set_by_primary = _yaml_keys(conf / f"{verb}.yaml")
    for group, option in choices.items():
        if option is None or group.startswith("hydra"):
            continue
        required |= {f"{group}.{key}" for key in _yaml_keys(conf / group / f"{option}.yaml")[0]
                     if f"{group}.{key}" not in set_by_primary}
    return required


def restore(cfg: DictConfig, conf: Path, verb: str, choices: dict[str, str | None], overrides: list[str]) -> None:
    """Mark the required keys that nothing gave a value as missing (`???`) in `cfg`, in place."""
    given = override_keys(overrides)
    for key in required_keys(conf, verb, choices) - given:
        OmegaConf.update(cfg, key, "???", merge=False)


def missing(cfg: DictConfig) -> list[str]:
    """Keys still `???`, sorted."""
    return sorted(OmegaConf.missing_keys(cfg))


def given_elsewhere(cfg: DictConfig, key: str) -> list[str]:
    """The keys of `cfg` holding a value under the same last name as the missing `key`: `train-clip
    data.tokenizer=tok.model` gave the Transformer's key where train-clip reads `tokenizer`."""
    leaf = key.rsplit(".", 1)[-1]
    found = []

    def walk(node: DictConfig, prefix: str) -> None:
        for name in node:
            full = f"{prefix}{name}"
            if OmegaConf.is_missing(node, name):
                continue
            value = node[name]
            if isinstance(value, DictConfig):
                walk(value, full + ".")
            elif name == leaf and full != key and value is not None:
                found.append(full)

    walk(cfg, "")
    return found


def check_required(cfg: DictConfig) -> None:
    """ConfigError naming every required key without a value, and where a key of the same name was given instead."""
    keys = missing(cfg)
    if keys:
        plural = "s" if len(keys) > 1 else ""
        instead = [f"{other} is set, but this verb reads {key}" for key in keys for other in given_elsewhere(cfg, key)]
        raise ConfigError(f"required key{plural} not set: {', '.join(keys)} (give "
                          + " ".join(f"{k}=..." for k in keys) + " on the command line"
                          + "".join(f"; {note}" for note in instead) + ")")
