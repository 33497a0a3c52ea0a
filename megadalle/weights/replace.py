"""What an export may write over: what an earlier export wrote there, and nothing else.

An export's `output` may already hold something: an earlier export, which it replaces, or a user's files (a run,
image shards, their own `x.json`), which no rerun would bring back; and nothing is written into a model folder but
by that folder's own export. Preflight asks before anything starts (train-dvae's and train-clip's `weights=`,
import-dvae's `output=`), an export before it reads the first tensor, and the writers again when they put a
finished export in place: all with `check_replaceable`, so that every writer of weights gets every rule.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from megadalle.folder_lock import LOCK
from megadalle.weights.errors import AmbiguousOutput, OutputInTheWay
from megadalle.weights.records import (CONFIG, INDEX, MANIFEST, config_path, json_object, model_folder_around,
                                       recorded_kind)


ELSEWHERE = "give another path, or remove it"
"""What to do about an output in the way: the export writes nowhere else on its own."""


def _remedy(target: Path, remedy: str) -> str:
    """What to do about `target` in the way: `remedy`, unless `target` is or lies in a model folder, whose files
    (its Transformer, the folder itself) are no user's to remove or move out: it is rewritten whole from its
    Transformer's run."""
    folder = model_folder_around(target)
    if folder is None:
        return remedy
    return (f"give another path; the model folder {folder} is rewritten whole, from its Transformer's run, by "
            f"{folder_export(folder)}")


def folder_export(folder: Path, run: str | Path | None = None, **pieces: str) -> str:
    """The command that rewrites the model folder `folder` whole, in backquotes: from `run`, else the Transformer's
    run its bundle.json names (`sampling.files.recorded_run`; RUN where it names none that is a run), with the
    folder's own tokenizer, dVAE and CLIP as its bundle.json names them, `pieces` (key: path) replacing them (a
    CLIP given, a megadalle export, replaces an open_clip reranker's clip_model too). The run's record alone would
    not do: a run trained without media records no dVAE (refused), nor the CLIP the folder was exported with (which
    the export then drops)."""
    from megadalle.config.override import command_line
    from megadalle.run_pieces import RECORDED_PIECES, VERB_KEYS
    from megadalle.sampling.files import recorded_run

    manifest = json_object(folder / MANIFEST) or {}
    run = run or recorded_run(folder)
    settings = {"run": run or "RUN", "output": folder}
    for piece in RECORDED_PIECES:
        name = manifest.get(piece)
        if isinstance(name, str) and name and (folder / name).is_file():
            settings[VERB_KEYS[piece]] = folder / name
    if manifest.get("clip_model", "megadalle") != "megadalle" and "clip_weights" in settings.keys() - pieces.keys():
        settings["clip_model"] = manifest["clip_model"]
    command = f"`{command_line('export', **{**settings, **pieces})}`"
    return command if run else f"{command} (RUN: its Transformer's training run)"


def check_outside_model_folder(target: str | Path, kind: str | None = None, whole: bool = False, alone: bool = False,
                               run: str | Path | None = None) -> None:
    """Refuse to write `target` where it is or lies in a model folder, unless this is that folder's own export. A
    model folder is written whole, by the folder export of its Transformer's run (bundle_write.py: `whole`, writing the
    folder `target`, then the Transformer its bundle.json names); weights of a `kind` model (None: any) put there
    otherwise skip that export's checks that the run's tokenizer and dVAE are the folder's, and leave its
    bundle.json describing the earlier model while `generate weights=FOLDER` samples this one. `alone`: the
    Transformer's weights written alone (`export weights_only`), refused even where the folder keeps its own;
    `run`: the training run exported, named in the way out."""
    folder = model_folder_around(target)
    if folder is None:
        return
    path = Path(os.path.abspath(target))
    inside = folder != path
    if whole and not inside:  # the folder's own export, whose `earlier` says what it replaces
        return
    if not (whole or alone) and kind in (None, "transformer") and path == _own_transformer(folder):
        return  # the Transformer that export writes, as it writes it (bundle_write.py)
    where = f"inside the model folder {folder}" if inside else "a model folder"
    if kind in (None, "transformer"):
        raise OutputInTheWay(f"output={target}: {where}, whose tokenizer, dVAE and bundle.json a Transformer exported "
                             f"alone would not match; export the whole folder with {folder_export(folder, run)}, or "
                             "give another path")
    if kind == "dvae":
        raise OutputInTheWay(f"output={target}: {where}, whose Transformer learnt the codes of its own dVAE, which "
                             "no other dVAE replaces; export it to another path (a Transformer trained on its codes "
                             "is exported to a model folder of its own)")
    raise OutputInTheWay(f"output={target}: {where}, whose Transformer and bundle.json a CLIP exported alone would "
                         f"not match; export it to another path (CLIP.safetensors), then the whole folder with "
                         f"{folder_export(folder, clip_weights='CLIP.safetensors')}")


def check_outside_checkpoints(target: str | Path) -> None:
    """Refuse to write `target` in a training run's checkpoints folder: the run deletes there what it does not keep
    (trainer.keep_checkpoints), an export as well, once it trains on."""
    from megadalle.sampling.load import checkpoint_in_run

    found = checkpoint_in_run(os.path.abspath(target))
    if found is not None:
        raise OutputInTheWay(f"output={target}: inside the checkpoints of the training run {found[0]}, which deletes "
                             "there what it does not keep (trainer.keep_checkpoints), an export too; give another "
                             "path")


def _own_transformer(folder: Path) -> Path | None:
    """Where the bundle.json of the model folder `folder` says its Transformer is; None where it says nothing."""
    own = (json_object(folder / MANIFEST) or {}).get("transformer")
    return folder / own if isinstance(own, str) and own else None


def one_file(output: str | Path) -> bool:
    """Whether an export writes `output` as one .safetensors file (else a folder). `x.safetensors/` says both, a
    file by its suffix and a folder by its slash (which Path drops): refused rather than guessed; so is the suffix
    in capitals (`x.SafeTensors`), which wrote a folder that other tools and case-blind file systems take for a
    file."""
    text = str(output)
    name = text.rstrip("/" + os.sep)
    named_file = name.endswith(".safetensors")
    if not named_file and name.lower().endswith(".safetensors"):
        raise AmbiguousOutput(f"output={text}: ends in {name[-len('.safetensors'):]}; write .safetensors for one "
                              "file, or name the folder otherwise")
    if named_file and text.endswith(("/", os.sep)):
        raise AmbiguousOutput(f"output={text}: ends in .safetensors (one file) and in / (a folder); drop the / "
                              "to write one file, or name the folder otherwise")
    return named_file


def _folder_in_the_way(folder: Path, kind: str | None) -> tuple[str, str] | None:
    """Why the export of a `kind` model's shards (None: of any kind, where the kind is not known yet) may not
    replace `folder`, and what to do; None where it may: an empty folder, or an earlier export of that kind holding
    nothing else. An index alone proves nothing (a Hugging Face model folder has one, beside its tokenizer and model
    card), and a replaced folder is deleted whole: so the index must record the kind (as an export writes it) and
    every file must be its config JSON or a shard it lists."""
    if not any(folder.iterdir()):
        return None
    index = json_object(folder / INDEX) if (folder / INDEX).is_file() else None
    if index is None:
        return f"exists and is neither empty nor an exported weights folder (no {INDEX})", ELSEWHERE
    metadata, weight_map = index.get("metadata"), index.get("weight_map")
    shards = (str(name) for name in weight_map.values()) if isinstance(weight_map, dict) else ()
    listed = {INDEX, CONFIG, *shards}
    others = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in listed)
    if others:
        return (f"holds files an export does not write ({', '.join(others)}), which replacing the folder would "
                "delete"), f"give another path, or move {'it' if len(others) == 1 else 'them'} out"
    found = metadata.get("kind") if isinstance(metadata, dict) else None
    if not isinstance(found, str):
        return (f"holds a {INDEX} that records no model kind (no megadalle export wrote it), so the export will "
                "not replace the folder"), ELSEWHERE
    if kind is not None and found != kind:
        return (f"holds the weights of a {found!r} model, and this export writes a {kind!r} one, so it will not "
                "replace them"), ELSEWHERE
    return None


def _file_in_the_way(target: Path, kind: str | None) -> tuple[str, str] | None:
    """Why one .safetensors file of a `kind` model (None: of any kind) may not be written at `target`, with its
    config JSON beside, and what to do; None where it may: nothing is there, or a model of that kind."""
    if target.is_dir():
        return "a folder, where the export writes one .safetensors file", ELSEWHERE
    found = recorded_kind(target) if target.exists() else None
    if target.exists() and found is None:
        return ("exists and is no weights file an export wrote (no safetensors recording a model kind), so the "
                "export will not replace it"), ELSEWHERE
    if target.exists() and kind is not None and found != kind:
        return (f"holds the weights of a {found!r} model, and this export writes a {kind!r} one, so it will not "
                "replace them"), ELSEWHERE
    config, wanted = config_path(target), found or kind
    if not config.exists():
        return None
    record = json_object(config) or {}
    if "config" in record and (record.get("kind") == wanted if wanted else isinstance(record.get("kind"), str)):
        return None
    what = "a config JSON an export wrote" if wanted is None else f"the config JSON of a {wanted!r} model"
    return f"{config} is there and is not {what}, and the export writes its config there", \
        f"give another path, or remove {config}"


def check_replaceable(target: str | Path, earlier: Callable[[Path], bool] | None = None, what: str = "",
                      kind: str | None = None, alone: bool = False, run: str | Path | None = None) -> None:
    """An export replaces what an earlier export wrote at `target` (its `output`) and nothing else: a folder of
    other files (a model folder, a run, image shards, a Hugging Face model) is never deleted nor written into, and
    a folder is no place for one file. A folder of shards replaces only an earlier export of a `kind` model (None:
    of any kind) holding nothing else (`_folder_in_the_way`); a caller writing another kind of folder says which
    folders are earlier exports with `earlier` (`what` names one); an empty one is taken (its lock file aside: an
    export killed before it wrote anything into the folder it made). One file replaces only the weights of a `kind`
    model, and its config JSON (`x.json` beside `x.safetensors`) only that model's: a user's `x.json`, the dVAE
    where the Transformer goes, are not overwritten. Checked before the first tensor is
    read (a 12B streams for minutes), and again when the export is put in place. Nothing is written in a model
    folder but by its own export, the caller passing `earlier` (`check_outside_model_folder`, with `alone` and
    `run`), nor in a training run's checkpoints, which the run prunes (`check_outside_checkpoints`)."""
    check_outside_model_folder(target, kind, earlier is not None, alone, run)
    check_outside_checkpoints(target)
    single = one_file(target)
    target = Path(target)
    if single:
        problem = _file_in_the_way(target, kind)
    elif not target.exists():
        problem = None
    elif not target.is_dir():
        problem = "exists and is no folder, so the export will not replace it", ELSEWHERE
    elif earlier is None:
        problem = _folder_in_the_way(target, kind)
    else:
        taken = earlier(target) or not any(p.name != LOCK for p in target.iterdir())
        problem = None if taken else (f"exists and is neither empty nor {what}, so the export will not replace it",
                                      ELSEWHERE)
    if problem:
        why, remedy = problem
        raise OutputInTheWay(f"output={target}: {why}; {_remedy(target, remedy)}")
