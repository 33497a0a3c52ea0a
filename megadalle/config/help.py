"""`megadalle <verb> [overrides] --help`: the composed config with each field's docstring beside it.

The docstrings live under the fields of the dataclass schemas (the attribute docstrings that
torchtitan's configs use too); Python keeps no trace of them at run time, so they are read from the
class's source with `ast`. A group's fields are documented by its schema (`SCHEMAS` of the config
modules), the verb's own keys by the schemas megadalle.config.verbs names, and a key no dataclass
documents by the comment beside it in the verb's YAML (or conf/config.yaml).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
import typing
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

COMMENT_COLUMN = 44
WIDTH = 120


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of a dataclass, from the string literal under each annotated field (whitespace folded)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def dataclass_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """{dotted key: docstring} of `cls` and of the dataclasses nested in its fields."""
    docs = {prefix + name: doc for name, doc in field_docs(cls).items()}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a forward reference that does not resolve: nested docs are left out
        hints = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints.get(f.name)):
            docs.update(dataclass_docs(hints[f.name], f"{prefix}{f.name}."))
    return docs


def group_schemas() -> dict[str, type]:
    """{group: schema dataclass} from every config module's SCHEMAS."""
    import pkgutil

    import megadalle.config as package

    schemas = {}
    for info in pkgutil.iter_modules(package.__path__):
        schemas.update(getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "SCHEMAS", {}))
    return schemas


def yaml_comments(path: Path) -> dict[str, str]:
    """{top-level key: the comment beside it} in a YAML file."""
    comments = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z_][\w-]*):[^#]*#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def all_docs(conf: Path, verb: str, verb_schemas: list[type], groups: list[str]) -> dict[str, str]:
    """{dotted key: doc} for a verb: YAML comments, overridden by the dataclasses' docstrings."""
    docs = {**yaml_comments(conf / "config.yaml"), **yaml_comments(conf / f"{verb}.yaml")}
    for cls in verb_schemas:
        docs.update(dataclass_docs(cls))
    schemas = group_schemas()
    for group in groups:
        if group in schemas:
            docs.update(dataclass_docs(schemas[group], group + "."))
    return docs


def _value(node: DictConfig, key) -> str:
    """A value as the YAML would write it: `???`, `${interpolation}`, `null`, `true`, `[a, b]`."""
    import yaml

    from megadalle.config.override import override_value

    if OmegaConf.is_missing(node, key):
        return "???"
    child = node._get_node(key)
    if OmegaConf.is_interpolation(node, key):
        return str(child._value())
    if isinstance(child, (DictConfig, ListConfig)):
        return yaml.safe_dump(OmegaConf.to_container(child), default_flow_style=True, width=1 << 16).strip()
    value = child._value()
    return value if isinstance(value, str) else override_value(value)  # a text shown as it is, not quoted


def render(cfg: DictConfig, docs: dict[str, str]) -> list[str]:
    """The config as YAML-like lines, `# doc` beside each documented key (wrapped under it when long)."""
    lines: list[str] = []

    def line_with_doc(text: str, doc: str | None) -> None:
        if not doc:
            lines.append(text)
            return
        pad = max(COMMENT_COLUMN, len(text) + 2)
        wrapped = textwrap.wrap(doc, max(40, WIDTH - pad - 2))
        lines.append(f"{text:<{pad}}# {wrapped[0]}")
        lines.extend(f"{'':<{pad}}# {more}" for more in wrapped[1:])

    def walk(node: DictConfig, prefix: str, indent: str) -> None:
        for key in node:
            child = node._get_node(key)
            full = f"{prefix}{key}"
            if isinstance(child, DictConfig) and not OmegaConf.is_missing(node, key) \
                    and not OmegaConf.is_interpolation(node, key) and len(child) > 0:
                line_with_doc(f"{indent}{key}:", docs.get(full))
                walk(child, full + ".", indent + "  ")
            else:
                line_with_doc(f"{indent}{key}: {_value(node, key)}", docs.get(full))

    walk(cfg, "", "")
    return lines
