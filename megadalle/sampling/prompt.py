"""What the tokenizer reads of a prompt, checked before any sample is drawn from it.

Python's `str.strip` keeps characters that sentencepiece drops (U+200B zero-width space, U+FEFF byte-order
mark): a prompt of those alone passed the blank check and was sampled from pads alone, an unconditional image
under a caption. Characters outside the tokenizer's pieces (and without byte_fallback) read as the unknown
piece, one per run of them: a prompt made mostly of them tells the model next to nothing, which is said.
"""
from __future__ import annotations

from megadalle import warn as warning
from megadalle.config import ConfigError


def ids(tokenizer, text: str) -> list[int]:
    """The ids sentencepiece reads of `text` (plain ids: its proto output needs protobuf, and sentencepiece 0.2.0
    returned it as bytes)."""
    return list(tokenizer.sp.encode(text))


def unknown(tokenizer, char: str) -> bool:
    """Whether the tokenizer reads `char` as its unknown piece (a BPE vocabulary holds every character it knows as
    a piece of its own, so a character alone tells)."""
    return tokenizer.sp.unk_id() in ids(tokenizer, char)


def code_points(chars: str) -> str:
    """`'ä' U+00E4, '\\u200b' U+200B`: each distinct character once, visible or not."""
    return ", ".join(f"{c!r} U+{ord(c):04X}" for c in dict.fromkeys(chars))


def check_prompt(tokenizer, prompt: str, key: str = "prompt") -> None:
    """Refuse a prompt the tokenizer reads nothing of (see the module docstring)."""
    if not ids(tokenizer, prompt):
        dropped = "".join(prompt.split())
        raise ConfigError(f"{key}={prompt!r}: " + (f"the tokenizer reads nothing of it (it drops {code_points(dropped)})"
                                                   if dropped else "blank" if prompt else "empty") + "; give words")


def warn_if_unknown(tokenizer, prompt: str, verb: str = "generate") -> None:
    """Say on stderr when most of the prompt's characters (spaces aside) are unknown to the tokenizer, naming
    them: the model reads each run of them as one unknown piece."""
    chars = "".join(prompt.split())
    strange = {c for c in set(chars) if unknown(tokenizer, c)}
    unread = "".join(c for c in chars if c in strange)
    if len(unread) > len(chars) - len(unread):
        warn(f"prompt {prompt!r}: {len(unread)} of {len(chars)} characters are unknown to the tokenizer, read as "
             f"its unknown piece: {code_points(unread)}", verb)


def warn(message: str, verb: str = "generate") -> None:
    """`message` on stderr as the sampling verb `verb` warns (megadalle.warn, safe under evaluate's progress bar):
    evaluate's prompts are sampled by generate's code, and their warnings said `[generate]` under `evaluate`."""
    warning.warn(message, f"[{verb}]")
