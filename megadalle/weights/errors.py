"""How weights go wrong, one class for each way, since their callers tell them apart: weights of another model,
none where a path points, an export's output taken or ambiguous, a file cut short or garbled.

Each is a UserError: the CLI prints its one line, which names the path and what to do.
"""
from __future__ import annotations

from pathlib import Path

from megadalle.errors import UserError


class WeightsError(UserError, ValueError):
    """Weights of another kind of model than the one asked for."""


class WeightsNotFound(UserError, FileNotFoundError):
    """No weights, or no config JSON beside them, where a path points."""


class OutputInTheWay(UserError, FileExistsError):
    """Something other than an earlier export where an export would write."""


class AmbiguousOutput(UserError, ValueError):
    """An export `output` that names a file and a folder at once."""


class WeightsDamaged(UserError, ValueError):
    """A weights file, or a JSON an export wrote beside it, that does not read as written: cut short, garbled, or
    a shard its index lists gone (a copy that stopped early, a disk that filled)."""


def damaged(path: str | Path, why: str) -> WeightsDamaged:
    """The one line for a damaged `path`: what is wrong, and the two ways to get it whole again."""
    return WeightsDamaged(f"{path}: {why}; re-export the weights, or copy this file again from where it came")
