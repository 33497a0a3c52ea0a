"""The files an earlier run of a verb listed as its own in a folder it shares with the user's files.

generate (sample_XX.png, listed in scores.json) and evaluate (samples/<caption>_<sample>.png, listed in
samples/index.json) write next to whatever else the folder holds. A rerun must take away the earlier run's
files, or its results read as this run's, and nothing else: a glob on the verb's name pattern deleted the
user's sample_2019_holiday.png. So only a file that both the earlier run's record lists and that is named as
the verb names its files is the verb's; without a readable record nothing in the folder is known to be its.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable


def listed_files(folder: Path, record: str, names_in: Callable[[Any], Iterable[Any]],
                 own_name: re.Pattern) -> list[Path] | None:
    """The files of `folder` that its `record` (JSON) lists, as `names_in(record)` reads them, of the names
    `own_name` matches in full; None when there is no record of the verb's (missing, not JSON, or not shaped
    as `names_in` reads it)."""
    try:
        names = list(names_in(json.loads((folder / record).read_text())))
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None
    return [folder / name for name in names if isinstance(name, str) and own_name.fullmatch(name)]


def remove_listed_files(folder: Path, record: str, names_in: Callable[[Any], Iterable[Any]],
                        own_name: re.Pattern) -> bool:
    """Remove `listed_files` (those already gone too); whether there was a record of the verb's."""
    files = listed_files(folder, record, names_in, own_name)
    for path in files or ():
        path.unlink(missing_ok=True)
    return files is not None
