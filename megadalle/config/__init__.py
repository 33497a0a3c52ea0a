"""Structured configs: one dataclass per concern, each in its own module of this package.

The YAML files under `conf/` hold values; the dataclasses here are their schemas. Hydra checks
names and types while composing (an unknown key or a string where an int belongs fails there);
`build` then turns a config node into its dataclass and runs the dataclass's `validate`, which
checks meaning (heads x head_dim == d_model, an odd conv kernel...). Validation never rewrites a
value: a config is either accepted as written or rejected with the key and the value named.

Each module here may define `SCHEMAS = {group: dataclass}`; `register_schemas` stores every one
in hydra's ConfigStore as `<group>/schema`, which the YAML files of that group extend.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
import re
from dataclasses import fields, is_dataclass
from typing import Any, Iterator, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from megadalle.errors import UserError
from megadalle.seeds import ROOT_SEEDS

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and the value."""


def check(ok: bool, key: str, value: Any, reason: str) -> None:
    """Raise ConfigError for `key=value` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {reason}")


def check_seed(where: str, seed: int) -> None:
    """A root seed in the range every generator it seeds takes (megadalle.seeds): seed=-1 and seed=2**64 were
    tracebacks once the run had started."""
    check(0 <= seed < ROOT_SEEDS, join(where, "seed"), seed, "must be in [0, 2**63), the seeds numpy and torch take")


def join(where: str, name: str) -> str:
    """Dotted key of field `name` under the node at `where` ("" for the config's top level)."""
    return f"{where}.{name}" if where else name


def top_level(cfg: DictConfig, cls: type) -> dict:
    """The verb-level keys of `cfg` that `cls` declares (the groups beside them are left out), resolved here,
    against the whole config (`output: ${out_dir}/generate`); `build` then takes each as it is (`literal`)."""
    from dataclasses import fields

    return {f.name: literal(cfg[f.name]) for f in fields(cls) if f.name in cfg}


def typed_container(cfg: DictConfig, *classes: type) -> dict:
    """The whole config as plain values, resolved, with the verb-level keys that `classes` declare as `build` types
    them. Hydra types only the groups (their schemas): a verb-level key set through an interpolation keeps the
    text it resolves to, so `new_data=${oc.env:ND}` with ND=false was the text 'false', true to bool(), and
    `seed=${oc.env:SEED}` the text '7', which run.json recorded and a later `seed=7` differed from."""
    return container_with(cfg, *(build(cls, top_level(cfg, cls), "") for cls in classes))


def container_with(cfg: DictConfig, *built: Any) -> dict:
    """`typed_container` of keys already built (`build` of the dataclasses' `top_level`), as a verb that reads
    them has them: the whole config resolved, those keys as built."""
    from dataclasses import fields

    container = OmegaConf.to_container(cfg, resolve=True)
    for keys in built:
        container.update({f.name: getattr(keys, f.name) for f in fields(keys) if f.name in container})
    return container


def literal(value: Any) -> Any:
    """A resolved text escaped so that OmegaConf reads it as itself: a prompt written `a \\${x} cat` resolves to
    `a ${x} cat`, which merged into a dataclass as it is would be an interpolation to resolve a second time
    (backslashes before a `${` are doubled, then `\\${` is OmegaConf's literal `${`). Other values as they are."""
    if not isinstance(value, str):
        return value
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)


def escaped(value: Any) -> Any:
    """`value` with every text in it `literal`, through nested mappings and lists."""
    if isinstance(value, dict):
        return {key: escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [escaped(item) for item in value]
    return literal(value)


def resolved(node: DictConfig | dict | None, where: str) -> DictConfig | dict | None:
    """A group node of a composed config resolved where it lies, against the whole config, as hydra resolves it:
    merged on its own into the schema, `trainer.lr=${trainer.min_lr}` or `${model.n_heads}` named a key of a root
    that no longer held it ("Interpolation key 'trainer.min_lr' not found"). Texts come back `literal`. A plain
    mapping (`top_level`'s, already resolved) is left as it is."""
    if not isinstance(node, DictConfig):
        return node
    try:
        return escaped(OmegaConf.to_container(node, resolve=True))
    except OmegaConfBaseException as err:
        key = err.full_key if node._get_parent() is not None else join(where, err.full_key)  # full_key from its root
        raise ConfigError(f"{key or where or 'config'}: {str(err).splitlines()[0]}") from None


def build(cls: type[T], node: DictConfig | dict | None, where: str) -> T:
    """Resolve `node` (`resolved`), merge it over the dataclass defaults, convert to the dataclass and validate it.

    `where` is the node's dotted path in the full config (e.g. "model"; "" for verb-level keys),
    used in error messages.
    """
    node = resolved(node, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node or {})
        obj = OmegaConf.to_object(merged)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{join(where, err.full_key)}: required, not set (give {join(where, err.full_key)}=...)") from None
    except OmegaConfBaseException as err:
        key = join(where, err.full_key) if getattr(err, "full_key", None) else where or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    check_finite(obj, where)  # after the schema's own checks, whose words say more where they cover a key
    return obj


def check_finite(obj: Any, where: str) -> None:
    """Refuse inf and nan in every float key of the dataclass `obj` (its nested dataclasses too): no key takes one,
    and `x >= 0` lets inf through, to a traceback at a timedelta or an int() once the run had started
    (deepspeed.timeout_minutes=inf, zero3_window_blocks=inf)."""
    for item in fields(obj):
        value, key = getattr(obj, item.name), join(where, item.name)
        if is_dataclass(value):
            check_finite(value, key)
        elif isinstance(value, float):
            check(math.isfinite(value), key, value, "must be a finite number")


def group_schemas() -> Iterator[tuple[str, type]]:
    """(group, schema) of every module's SCHEMAS: hydra's ConfigStore holds them (`register_schemas`), and a sweep's
    jobs are checked by them (megadalle.sweep_jobs.build_groups)."""
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for group, schema in getattr(module, "SCHEMAS", {}).items():
            assert is_dataclass(schema), f"{module.__name__}.SCHEMAS[{group!r}] is not a dataclass"
            yield group, schema


def register_schemas() -> None:
    """Store every module's SCHEMAS in hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in group_schemas():
        store.store(group=group, name="schema", node=schema)
