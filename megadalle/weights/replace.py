"""What an export may write over: what an earlier export wrote there, and nothing else.

An export's `output` may already hold something: an earlier export, which it replaces, or a user's files (a run,
image shards, their own `x.json`), which no rerun would bring back. Preflight asks before anything starts, an
export before it reads the first tensor, and the writers again when they put a finished export in place: all
with `check_replaceable`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from megadalle.weights.errors import AmbiguousOutput, OutputInTheWay
from megadalle.weights.records import INDEX, config_path, json_object, recorded_kind


def one_file(output: str | Path) -> bool:
    """Whether an export writes `output` as one .safetensors file (else a folder). `x.safetensors/` says both, a
    file by its suffix and a folder by its slash (which Path drops): refused rather than guessed."""
    text = str(output)
    named_file = text.rstrip("/" + os.sep).endswith(".safetensors")
    if named_file and text.endswith(("/", os.sep)):
        raise AmbiguousOutput(f"output={text}: ends in .safetensors (one file) and in / (a folder); drop the / "
                              "to write one file, or name the folder otherwise")
    return named_file


def _weights_folder(folder: Path) -> bool:
    return (folder / INDEX).is_file()


def _file_in_the_way(target: Path, kind: str | None) -> tuple[str, Path] | None:
    """Why one .safetensors file of a `kind` model (None: of any kind) may not be written at `target`, with its
    config JSON beside, and what is in the way; None where it may: nothing is there, or a model of that kind."""
    if target.is_dir():
        return "a folder, where the export writes one .safetensors file", target
    found = recorded_kind(target) if target.exists() else None
    if target.exists() and found is None:
        return ("exists and is no weights file an export wrote (no safetensors recording a model kind), so the "
                "export will not replace it"), target
    if target.exists() and kind is not None and found != kind:
        return (f"holds the weights of a {found!r} model, and this export writes a {kind!r} one, so it will not "
                "replace them"), target
    config, wanted = config_path(target), found or kind
    if not config.exists():
        return None
    record = json_object(config) or {}
    if "config" in record and (record.get("kind") == wanted if wanted else isinstance(record.get("kind"), str)):
        return None
    what = "a config JSON an export wrote" if wanted is None else f"the config JSON of a {wanted!r} model"
    return f"{config} is there and is not {what}, and the export writes its config there", config


def check_replaceable(target: str | Path, earlier: Callable[[Path], bool] = _weights_folder,
                      what: str = f"an exported weights folder (no {INDEX})", kind: str | None = None) -> None:
    """An export replaces what an earlier export wrote at `target` (its `output`) and nothing else: a folder of
    other files (a model folder, a run, image shards) is never deleted nor written into, and a folder is no place
    for one file. A folder is an earlier export when `earlier` says so (`what` names one); an empty one is
    taken. One file replaces only the weights of a `kind` model (None: of any kind, where the kind is not known
    yet), and its config JSON (`x.json` beside `x.safetensors`) only that model's: a user's `x.json`, the dVAE
    where the Transformer goes, are not overwritten. Checked before the first tensor is read (a 12B streams for
    minutes), and again when the export is put in place."""
    single = one_file(target)
    target = Path(target)
    if single:
        problem = _file_in_the_way(target, kind)
    else:
        taken = target.is_dir() and (earlier(target) or not any(target.iterdir()))
        problem = (None if not target.exists() or taken else
                   (f"exists and is neither empty nor {what}, so the export will not replace it", target))
    if problem:
        why, obstacle = problem
        raise OutputInTheWay(f"output={target}: {why}; give another path, or remove "
                             f"{'it' if obstacle == target else obstacle}")
