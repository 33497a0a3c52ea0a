"""A value written as a `key=value` override that hydra reads back as that value: the one renderer of the command
lines megadalle prints for a user to run (the advice of a refusal, plan's launch line, a rebuild's command), which
must run as printed.

Hydra's grammar reads a comma as a sweep, brackets and braces as a list or a dict, an apostrophe or a letter outside
ASCII as syntax and `2024` as a number, and strips the spaces around a value; OmegaConf then reads each `${` as an
interpolation, quoted or not. A text is written as it is where hydra reads it back unchanged, else quoted
(`quoted`), and each `${` in it escaped (`escaped_interpolations`).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

INTERPOLATION = re.compile(r"(\\*)\$\{")
"""A `${` and the backslashes before it: OmegaConf reads `\\${` as the text `${`, and `\\\\${` as a backslash before an
interpolation."""

QUOTE_OR_END = re.compile(r'(\\*)("|\Z)')
"""A quote or the end of a value, and the backslashes before it: inside hydra's quotes those escape it."""

ANSI_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def override_word(key: str, value: Any) -> str:
    """`key=value` as one shell word that hydra reads back as `value` (`override_value`)."""
    return shell_word(f"{key}={override_value(value)}")


def command_line(verb: str, **settings: Any) -> str:
    """`megadalle VERB key=value ...`, each setting an `override_word`: the command a message advises runs as
    printed, whatever its paths hold (a space, a comma, an apostrophe, a `${`). A placeholder for the user to fill
    (`output=DIR`) is a setting like any other, written in capitals."""
    return " ".join(["megadalle", verb, *(override_word(key, value) for key, value in settings.items())])


def override_value(value: Any) -> str:
    """`value` in hydra's override grammar: null, true/false, a number, `[a,b]`, `{k:v}`, and a text as `text_value`
    writes it (anything else, a Path, is written as its text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    return text_value(str(value))


def text_value(text: str) -> str:
    """`text` as hydra reads it back: as it is where hydra's grammar reads it unchanged, else quoted. With a `${`
    always quoted and escaped (the parser reads it back unchanged, as a text that resolves to another); with a
    backslash always quoted: unquoted, it escapes what follows it, and a value read back whole (`ends\\`) was an
    escaped comma inside a list (`[ends\\,b]`); and empty, `""`, which a list or a dict reads too."""
    from hydra.errors import HydraException

    if "${" in text:
        return quoted(escaped_interpolations(text))
    if not text or "\\" in text:
        return quoted(text)
    try:
        read = parser().parse_override(f"key={text}").value()
    except HydraException:
        read = None
    return text if read == text else quoted(text)


@lru_cache(maxsize=1)
def parser():
    """Hydra's override parser, the one every reader of overrides in megadalle uses (made once: it holds no state
    of a parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def quoted(text: str) -> str:
    """`"text"` as hydra reads a quoted value: the text inside, its quotes escaped (`\\"`) and the backslashes before a
    quote or the closing one doubled (a path ending in one ended the quotes)."""
    return '"' + QUOTE_OR_END.sub(lambda found: found[1] * 2 + "\\" * bool(found[2]) + found[2], text) + '"'


def quoted_form(key: str, value: str) -> str:
    """`key="value"` as one shell word, `value` quoted as it is (`quoted`): for a text whose `${` are escaped already,
    or meant as interpolations."""
    return shell_word(f"{key}={quoted(value)}")


def escaped_interpolations(text: str) -> str:
    """`text` as OmegaConf reads it back as `text`: each `${` escaped (`\\${`), the backslashes before it doubled."""
    return INTERPOLATION.sub(lambda found: found[1] * 2 + "\\${", text)


def literal_text(raw: str) -> str:
    """The text a value OmegaConf reads is, each `${` taken as text: its escapes before a `${` undone (`\\${` is
    `${`, `\\\\${` a backslash and `${`), so that `escaped_interpolations` writes it back with every `${` as text."""
    return INTERPOLATION.sub(lambda found: found[1][:len(found[1]) // 2] + "${", raw)


def shell_word(text: str) -> str:
    """`text` as one shell word, on one line. shlex keeps a newline as it is, and a message holding one was cut
    there (the CLI shows a refusal's first line), before its reason and its fix: a text with a character that does
    not print (a newline of `prompt="$(cat p.txt)"`, a tab) is written in bash's $'...' form, each escaped."""
    import shlex

    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(ANSI_C_ESCAPES.get(c) or printable(c) for c in text) + "'"


def printable(text: str) -> str:
    """`text` with each character that does not print escaped as $'...' writes it (\\n, \\t, \\r; a code point:
    \\xHH below 0x80, where bash's \\xHH is a character, else \\uHHHH or \\UHHHHHHHH)."""
    return "".join(c if c.isprintable() else ANSI_C_ESCAPES.get(c) or code_escape(ord(c)) for c in text)


def code_escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
