"""Every override names a key that a schema of its verb declares, or a node that a schema leaves open.

Hydra refuses a plain `trainer.lrr=1` with its own words ("Key 'lrr' not in 'TrainerConfig'"), which name no key
that exists; and its `+` and `++` write into the composed config with its struct flag lifted, so `+trainer.lrr=1`
(a misspelt `trainer.lr`) or `+foo=1` composed, trained with the key ignored, and went into run.json, where the
next rerun without it was refused. `check_keys` refuses every key no schema declares, before anything is composed
(sweeps included), with the declared key nearest in spelling: a key is declared by a group's schema, a field of the
verb's dataclasses or a key of the verb's YAML; a field typed `dict` (`deepspeed.extra`, raw DeepSpeed keys that
megadalle does not know) or `list` (an index) is open below. `~key` is refused too, unless the key lies below
such a node: deleting a verb's own key (`~gpus`) left the stage its dataclass's built-in value, not the YAML's,
in silence.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing

import yaml

from megadalle.config import ConfigError


def load_conf(name: str) -> dict:
    """conf/<name>.yaml as a dict."""
    from megadalle.config.compose import conf_dir

    return yaml.safe_load((conf_dir() / f"{name}.yaml").read_text()) or {}


def verb_groups(verb: str) -> list[str]:
    """The config groups the verb's defaults list composes (`generate` has none: `clip=` is no group of its)."""
    return [group.split()[-1] for entry in load_conf(verb).get("defaults", []) if isinstance(entry, dict)
            for group in entry]


def verb_keys(verb: str) -> dict[str, type | None]:
    """{top-level key of the verb: its type where a schema gives one}: the verb's groups (their schemas), the fields
    of its dataclasses, and the keys of its YAML and of the configs that YAML extends (conf/config.yaml)."""
    from megadalle.config.help import group_schemas
    from megadalle.config.verbs import VERB_SCHEMAS

    own = load_conf(verb)
    parents = [entry for entry in own.pop("defaults", []) if isinstance(entry, str) and entry != "_self_"]
    keys: dict[str, type | None] = dict.fromkeys(own, None)
    for parent in parents:
        keys.update(dict.fromkeys(load_conf(parent), None))
    schemas = group_schemas()
    keys.update({group: schemas.get(group) for group in verb_groups(verb)})
    for cls in VERB_SCHEMAS.get(verb, ()):
        keys.update(typing.get_type_hints(cls))
    return keys


def plain(hint):
    """`hint` without `| None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def is_open(hint) -> bool:
    """Whether a schema leaves the names below a node of this type open: a `dict` (any key) or a `list` (indices)."""
    return hint in (dict, list) or typing.get_origin(hint) in (dict, list)


def lookup(verb: str, key: str) -> tuple[tuple[str, str, list[str]] | None, bool]:
    """(None where a schema of `verb` declares `key` or leaves room for it, else (the declared node above the first
    undeclared name, "" for the top level; that name; the names declared beside it)), and whether `key` lies below
    an open node (`is_open`)."""
    keys = verb_keys(verb)
    head, *rest = key.split(".")
    if head not in keys:
        return ("", head, list(keys)), False
    hint, where = plain(keys[head]), head
    for name in rest:
        if is_open(hint):
            return None, True
        names = [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else []
        if name not in names:
            return (where, name, names), False
        hint, where = plain(typing.get_type_hints(hint)[name]), f"{where}.{name}"
    return None, False


def groups_of_others(verb: str, name: str) -> list[str]:
    """The verbs other than `verb` whose config composes the group `name` (none where it is no group)."""
    from megadalle.config.compose import conf_dir

    if not (conf_dir() / name).is_dir():
        return []
    return sorted(path.stem for path in conf_dir().glob("*.yaml")
                  if path.stem not in (verb, "config") and name in verb_groups(path.stem))


def no_key(verb: str, item: str, where: str, name: str, beside: list[str]) -> str:
    """The message for `item`, whose key has the undeclared `name` under `where`: the declared key nearest in spelling,
    else one that starts with the name; and where the name is a group of other verbs, those verbs and the key that
    starts with it alone (`generate clip=` -> `clip_model`, where `model=` is no misspelt `clip_model`)."""
    prefix = f"{where}." if where else ""
    others = groups_of_others(verb, name) if not where else []
    starting = [n for n in beside if n.startswith(f"{name}_")][:1]
    near = starting if others else difflib.get_close_matches(name, beside, n=1) or starting
    if not near and not where:  # a group's key given at the top (`train tokenizer=` for data.tokenizer)
        near = [f"{group}.{name}" for group in verb_groups(verb) if lookup(verb, f"{group}.{name}")[0] is None][:1]
    group = f" (a config group of {', '.join(others)}, not of {verb})" if others else ""
    plus = " and `+` cannot add one" if item.startswith("+") else ""
    hint = f"; did you mean {prefix}{near[0]}?" if near else ""
    return f"{item}: megadalle {verb} has no key {prefix}{name}{plus}{group}{hint} (megadalle {verb} --help lists the keys)"


def check_keys(verb: str, overrides: list[str]) -> None:
    """ConfigError for the first override whose key no schema of `verb` declares, or that deletes a declared key
    (`~gpus`); hydra's own keys and its `group/option` forms are hydra's to check."""
    for item in overrides:
        key = item.lstrip("~+").partition("=")[0].split("@")[0]
        if ("=" not in item and not item.startswith("~")) or not key or key.startswith("hydra") or "/" in key:
            continue
        missing, below_open = lookup(verb, key)
        if missing is not None:
            raise ConfigError(no_key(verb, item, *missing))
        if item.startswith("~") and not below_open:
            raise ConfigError(f"{item}: a key of megadalle {verb} cannot be deleted (the stage would take a built-in "
                              f"value in silence, or hydra refuse it); set it instead: {key}=VALUE")
