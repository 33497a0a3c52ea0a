"""`+key=value` adds a key only where a schema declares it or leaves room for it.

Hydra's `+` and `++` write into the composed config with its struct flag lifted, so `+trainer.lrr=1` (a misspelt
`trainer.lr`) or `+foo=1` composed, trained with the key ignored, and went into run.json, where the next rerun
without it was refused. A plain `trainer.lrr=1` is refused by hydra; `check_added` refuses the added key as well,
before anything is composed (sweeps included), unless a schema declares it: a group's schema, a field of the
verb's dataclasses, a key of the verb's YAML; or it lies under a field typed `dict`, the one kind of node a schema
leaves open (`deepspeed.extra`, raw DeepSpeed keys that megadalle does not know).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing

import yaml

from megadalle.config import ConfigError


def verb_keys(verb: str) -> dict[str, type | None]:
    """{top-level key of the verb: its type where a schema gives one}: the verb's groups (their schemas), the fields
    of its dataclasses, and the keys of its YAML and of the configs that YAML extends (conf/config.yaml)."""
    from megadalle.config.compose import conf_dir
    from megadalle.config.help import group_schemas
    from megadalle.config.verbs import VERB_SCHEMAS

    def load(name: str) -> dict:
        return yaml.safe_load((conf_dir() / f"{name}.yaml").read_text()) or {}

    own = load(verb)
    keys: dict[str, type | None] = dict.fromkeys(own, None)
    schemas = group_schemas()
    for entry in own.pop("defaults", []):
        if isinstance(entry, dict):
            keys.update({group.split()[-1]: schemas.get(group.split()[-1]) for group in entry})
        elif entry != "_self_":
            keys.update(dict.fromkeys(load(entry), None))
    for cls in VERB_SCHEMAS.get(verb, ()):
        keys.update(typing.get_type_hints(cls))
    return keys


def plain(hint):
    """`hint` without `| None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def undeclared(verb: str, key: str) -> tuple[str, str, list[str]] | None:
    """None where a schema of `verb` declares `key` or leaves room for it; else (the declared node above the first
    undeclared name, "" for the top level; that name; the names declared beside it)."""
    keys = verb_keys(verb)
    head, *rest = key.split(".")
    if head not in keys:
        return "", head, list(keys)
    hint, where = plain(keys[head]), head
    for name in rest:
        if hint is dict or typing.get_origin(hint) is dict:
            return None
        names = [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else []
        if name not in names:
            return where, name, names
        hint, where = plain(typing.get_type_hints(hint)[name]), f"{where}.{name}"
    return None


def check_added(verb: str, overrides: list[str]) -> None:
    """ConfigError for the first `+key=value` or `++key=value` whose key no schema of `verb` declares (hydra's own
    keys aside), suggesting the declared key nearest in spelling."""
    for item in overrides:
        if not item.startswith("+"):
            continue
        key = item.lstrip("+").partition("=")[0].split("@")[0]
        if key.startswith("hydra") or (missing := undeclared(verb, key)) is None:
            continue
        where, name, beside = missing
        prefix = f"{where}." if where else ""
        near = difflib.get_close_matches(name, beside, n=1)
        hint = f"; did you mean {prefix}{near[0]}?" if near else ""
        raise ConfigError(f"{item}: megadalle {verb} has no key {prefix}{name} and `+` cannot add one{hint} "
                          f"(megadalle {verb} --help lists the keys)")
