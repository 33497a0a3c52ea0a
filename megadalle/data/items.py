"""One input pair of `prepare`'s (sources.py lists them, manifests.py makes a manifest's), and the error for an
input that cannot be read as a whole."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from megadalle.errors import UserError


class InputError(UserError, ValueError):
    """An `input=` that cannot be read as a whole (the CLI prints it as one line)."""


@dataclass(frozen=True)
class Item:
    """One input pair. Exactly one of `captions` (manifest) and `caption_file` (folder) is set, or
    `problem` says why the row is unusable."""

    key: str
    """Shard key: the item's position in the input order, zero-padded (the same for a rerun on the same input)."""
    image: Path
    source: str
    """How the input names it (relative path or manifest line), for reports and metadata: as text (`names.shown`),
    so a name that is not UTF-8 shows its odd bytes as `\\xNN`."""
    captions: tuple[str, ...] | None = None
    caption_file: Path | None = None
    problem: tuple[str, str] | None = None
    """(reason, detail) for a row already known to be bad."""
    span: tuple[int, int] | None = None
    """For a shard sample: its byte span in the tar `image` (then image and caption are read from there)."""
    held_out: bool = False
    """From the input's own validation split (`<input>/val/`): held out again, whatever `val_fraction`."""
