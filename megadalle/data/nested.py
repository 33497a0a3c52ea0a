"""Tars in the subfolders of a folder read as shards: the readers take the `*.tar` of one folder, so these were left out
without a word (`prepare` kept the top folder's samples only; with tars in subfolders only, it read the folder as
images and found none). They are refused by name instead, with the folder to pass: a data set split over folders is
no layout megadalle writes or documents (img2dataset writes its tars side by side), and which of them the user meant
cannot be guessed.
"""
from __future__ import annotations

import os
from pathlib import Path

from megadalle.config.data import VAL_DIR

SHOWN = 3
"""Tars named in the message; the rest are counted."""


def nested_tars(root: Path) -> list[str]:
    """The `*.tar` files below `root`'s top level, relative to it, sorted. A validation split (`<root>/val/`, read as
    such) and hidden folders and files (a writer's staging) are not counted."""
    found = []
    for folder, dirs, names in os.walk(root):
        below = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (below == Path() and d == VAL_DIR))
        if below != Path():
            found += [(below / name).as_posix() for name in sorted(names)
                      if name.endswith(".tar") and not name.startswith(".")]
    return found


def nested_note(root: Path, nested: list[str]) -> str:
    """Why the tars `nested` in `root`'s subfolders are refused, and the folder to pass (or to empty) instead."""
    more = f" and {len(nested) - SHOWN} more" if len(nested) > SHOWN else ""
    many = len(nested) > 1
    return (f"{root} holds {len(nested)} .tar file{'s' * many} in subfolders ({', '.join(nested[:SHOWN])}{more}), "
            "which megadalle does not read: it reads the *.tar of one folder, not of its subfolders; move "
            f"{'them' if many else 'it'} into {root}, or pass {root / Path(nested[0]).parent} on its own")
