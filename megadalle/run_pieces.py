"""The tokenizer, dVAE and CLIP that a Transformer run's run.json records, as `export` and the sampling verbs read
them (and the weights a train-dvae run exported, as `encode` reads them): a run directory and its export sample with
the same files. A key given to the verb wins over the record.
run.json records the paths absolute (train/rundir.recorded); an older one's relative paths are read only from the
folder the run was started from (`recorded`), and refused elsewhere, where they would name other files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from megadalle.config.override import command_line, override_word
from megadalle.errors import BundleError


def read(run_dir: Path) -> dict:
    """A run directory's run.json: its config and the sha256 of its tokenizer."""
    record = run_dir / "run.json"
    if not record.is_file():
        raise BundleError(f"run={run_dir}: not a training run directory (no run.json)")
    try:
        data = json.loads(record.read_text())
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for a binary file
        raise BundleError(f"{record}: not readable ({err}); {RECOPY}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{record}: a JSON {type(data).__name__}, not the record a training run writes")
    return data


RECOPY = "copy the run directory again from where it came"
"""The way out of a run.json that does not read as a training run writes it: the run writes it once, at its start."""


def task_factory(run: Path, record: dict) -> Callable[[dict], Any]:
    """The function that rebuilds the task of the run whose run.json is `record` from its config: `task_factory`,
    `module:function`. A record without one, or naming none that imports, is refused by name (it was a KeyError,
    ValueError or ImportError traceback where the task was rebuilt)."""
    import importlib

    named = record.get("task_factory")
    module, colon, function = named.partition(":") if isinstance(named, str) else ("", "", "")
    where = f"{run / 'run.json'}: task_factory={named!r}" if "task_factory" in record else f"{run / 'run.json'}"
    if not (module and colon and function) or ":" in function:
        what = "names no task_factory" if "task_factory" not in record else "is not module:function"
        raise BundleError(f"{where} {what}, so the run cannot be rebuilt; {RECOPY}")
    try:
        found = getattr(importlib.import_module(module), function, None)
    except ModuleNotFoundError as err:
        if err.name is None or not (module == err.name or module.startswith(err.name + ".")):
            raise  # the module is there, and what it imports is not: its own error says what
        found = None
    if not callable(found):
        raise BundleError(f"{where}: no such function in this megadalle, so the run cannot be rebuilt; {RECOPY}, or "
                          "export it with the megadalle that trained it")
    return found


RECORDED_PIECES = {"tokenizer": "data.tokenizer", "dvae": "dvae_weights", "clip": "clip_weights"}
"""Where a Transformer run's config records the tokenizer, dVAE and CLIP it trained with (or drew grids with)."""


def lookup(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


VERB_KEYS = {"tokenizer": "tokenizer", "dvae": "dvae_weights", "clip": "clip_weights"}
"""The key of `export` and of the sampling verbs that gives each piece instead of the run's record."""
MODEL_NAMES = {"dvae": "dVAE", "clip": "CLIP"}
"""How the messages name the model of each piece that is one."""


def source(run: Path, piece: str) -> str:
    """Where a run's record names `piece`, for a message: `RUN/run.json's dvae_weights`."""
    return f"{run / 'run.json'}'s {RECORDED_PIECES[piece]}"


def recorded(run: Path, record: dict, piece: str) -> Path | None:
    """The file a Transformer run's run.json records for `piece` (RECORDED_PIECES), absolute; None where it records
    none (`recorded_path`)."""
    return recorded_path(run, record.get("config", {}), RECORDED_PIECES[piece], VERB_KEYS[piece])


def recorded_path(run: Path, config: dict, dotted: str, instead: str) -> Path | None:
    """The path a run's recorded `config` holds at `dotted`, absolute; None where it holds none. A run.json written
    before paths were recorded absolute (rundir.recorded) holds the path as typed, relative to the folder the run was
    started from: read from there (rundir.started_here), and refused anywhere else, where it would name another file
    (another dVAE, in silence), with `instead`, the reader's key for the file."""
    from megadalle.train import rundir

    value = lookup(config, dotted)
    if not value:
        return None
    path = Path(str(value))
    if path.is_absolute():
        return path
    if rundir.started_here(run, config):
        return Path.cwd() / path
    raise BundleError(f"{run / 'run.json'}'s {dotted}={value} is relative to the folder the run was started from, "
                      f"which is not this one or cannot be told (recorded before paths were recorded absolute): pass "
                      f"{instead}=FILE (the file the run used), run this from that folder, or write its absolute path "
                      f"into {run / 'run.json'}")


def pick(given: str | None, run: Path, record: dict, piece: str, required: bool) -> Path | None:
    """export's file for `piece`: the one its key gives, else the one the run's run.json records."""
    key = VERB_KEYS[piece]
    path = Path(given) if given else recorded(run, record, piece)
    if path is None:
        if required:
            raise BundleError(f"{key}: not given and not recorded in the run's config; pass {key}=PATH")
        return None
    where = "" if given else f" (from {source(run, piece)})"
    if path.is_dir():
        raise BundleError(f"{key}={path}{where}: a directory, {instead_of_folder(path, piece)}")
    if not path.is_file():
        raise BundleError(f"{key}={path}{where}: no such file; pass {key}=FILE")
    return path


def instead_of_folder(folder: Path, piece: str) -> str:
    """What the folder `folder` is not, and what to pass instead, where export copies the file of `piece`. For a
    dVAE or CLIP, a train-dvae or train-clip run's own export (`run_export`, written when the run finishes) is
    named, not taken: a run read as a file was "no such file" beside an existing directory, and generate reads a
    run from its newest checkpoint, which an export left behind by a resumed run is not. A run of another model
    (a Transformer's) has no such export to offer."""
    key = VERB_KEYS[piece]
    if piece == "tokenizer":
        return f"not a sentencepiece .model file; pass {key}=FILE"
    if not (folder / "run.json").is_file():
        return f"not a weights file; pass {key}=FILE (a .safetensors with its .json beside)"
    record = read(folder)
    other = other_model(record, piece)
    if other is not None:
        return (f"not a weights file: a run of another model ({other}), not of train-{piece}; pass the "
                f"{MODEL_NAMES[piece]} weights, {key}=FILE")
    path = run_export(folder, record.get("config", {}), piece)
    if path.is_file():
        return f"not a weights file; pass the weights the run exported: {override_word(key, path)}"
    export = command_line("export", run=folder, output="FILE.safetensors", dtype="fp32")
    return (f"not a weights file; pass the weights the run exports when it finishes ({path}, not there: rerun its "
            f"training command to finish it, or `{export}` and {key}=FILE.safetensors)")


def export_advice(run: Path, checkpoint: str | Path = "STEP", dvae: str | Path | None = None) -> str:
    """How to read the `checkpoint` of `run` (STEP: the user's choice of its step_* folders) where the run itself
    reads its newest: `megadalle export` of it, then the key that takes what it wrote, as a line that runs as
    printed. A Transformer's run is exported as a model folder, which needs its tokenizer and dVAE: the run's
    record names them, else `dvae` (the one the caller was given) or a placeholder the text explains (a run
    trained without media records no dVAE: the usual case). A dVAE's or CLIP's run is exported as one file (a
    model folder is a Transformer's). A train-dvae run given as `dvae` (generate reads one) is named by the file
    it exported, which export copies (`_as_file`)."""
    record = read(run)
    trained = trained_piece(record)
    if trained:
        export = command_line("export", run=run, checkpoint=checkpoint, output="FILE.safetensors")
        return f"`{export}`, then {VERB_KEYS[trained]}=FILE.safetensors"
    pieces, missing = {}, []
    for piece, given in (("tokenizer", None), ("dvae", dvae)):
        try:
            found = given or recorded(run, record, piece)
        except BundleError:  # a relative path of an older record, read from elsewhere: not to be guessed
            found = None
        named, why = _as_file(Path(found), piece) if found else PLACEHOLDERS[piece]
        pieces[VERB_KEYS[piece]] = named
        missing += [(named, why)] if why else []
    export = command_line("export", run=run, checkpoint=checkpoint, output="DIR", **pieces)
    said = "; ".join(f"{name}: {what}" for name, what in missing)
    return f"`{export}`, then weights=DIR" + (f" ({said})" if said else "")


def _as_file(path: Path, piece: str) -> tuple[Path | str, str]:
    """`path` as export takes it for `piece`, and "" (or a placeholder and what it stands for): a file as it is; for
    a train-dvae or train-clip run (which the sampling verbs read, and export refuses as a directory), the weights it
    exported (`run_export`), else, where it exported none yet, the file that its export would write."""
    if not path.is_dir() or piece not in MODEL_NAMES or not (path / "run.json").is_file():
        return path, ""
    try:
        record = read(path)
        exported = None if other_model(record, piece) else run_export(path, record.get("config", {}), piece)
    except BundleError:
        exported = None
    if exported is not None and exported.is_file():
        return exported, ""
    placeholder = f"{PLACEHOLDERS[piece][0]}.safetensors"
    export = command_line("export", run=path, output=placeholder, dtype="fp32")
    return placeholder, f"the weights of the {MODEL_NAMES[piece]} run {path}, which `{export}` writes"


PLACEHOLDERS = {"tokenizer": ("TOKENIZER", "the sentencepiece model the run trained with"),
                "dvae": ("DVAE", "the dVAE weights whose codes the run's token shards hold")}
"""What `export_advice` writes for a piece of a model folder that the run does not record, and what it stands for."""


def run_export(run: Path, config: dict, piece: str) -> Path:
    """Where a train-dvae or train-clip run (`piece` "dvae" or "clip"; `config` its run.json's) exports its
    weights when it finishes: its recorded `weights` (`recorded_path`), else <run>/<piece>.safetensors."""
    return recorded_path(run, config, "weights", VERB_KEYS[piece]) or run / f"{piece}.safetensors"


def trained_piece(record: dict) -> str | None:
    """The piece ("dvae", "clip") that the run whose run.json is `record` trained; None for a Transformer's run and
    for one recording no task."""
    if not record.get("task_factory"):
        return None
    return next((piece for piece in MODEL_NAMES if other_model(record, piece) is None), None)


def other_model(record: dict, piece: str) -> str | None:
    """The task (`task_factory`) of the run whose run.json is `record` when it trained another model than `piece`
    ("dvae" or "clip"); None for a run of `piece`, and for one recording no task (read as one of `piece`)."""
    if piece == "dvae":
        from megadalle.train.dvae import FACTORY
    else:
        from megadalle.train.clip import FACTORY
    factory = record.get("task_factory", FACTORY)
    return None if factory == FACTORY else str(factory)
