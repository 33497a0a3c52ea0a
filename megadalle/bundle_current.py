"""Whether a model folder already holds the export a command would write, so that `megadalle export` run again with
the same command leaves it as it is.

Rewritten with the same contents, the folder's files got new modification times, and `generate` records the files
behind its weights by their size and time (sampling/resume.py): a stopped generate of the folder could no longer
continue, and a finished one was no longer done. Pipeline scripts and requeued jobs rerun every stage's command.
bundle.json records what its export read (EXPORT_KEY): the run, its checkpoint, the EMA or not, the dtype and the
shard size, the CLIP's kind, and each piece's path, size and modification time. An export of the same is `current`.
"""
from __future__ import annotations

from pathlib import Path

from megadalle.sampling.files import DVAE, TOKENIZER, TRANSFORMER, is_bundle
from megadalle.weights import MANIFEST
from megadalle.weights.records import json_object

EXPORT_KEY = "export"


def export_record(run: str | Path, files: dict[str, Path | None], checkpoint: str, ema: bool, dtype: str,
                  max_shard_bytes: int, clip_model: str) -> dict:
    """bundle.json's record of an export of `run`'s `checkpoint` (its name) with the pieces `files` (tokenizer, dVAE,
    CLIP: `bundle_write.bundle_files`), as JSON gives it back."""
    return {"run": str(Path(run).resolve()), "checkpoint": checkpoint, "ema": ema, "dtype": dtype,
            "max_shard_bytes": max_shard_bytes, "clip_model": clip_model,
            "pieces": {name: None if path is None else _state(path) for name, path in files.items()}}


def _state(path: Path) -> list:
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def current(output: str | Path, record: dict) -> bool:
    """Whether the model folder `output` is finished (bundle.json, written last, is there), records the export
    `record` describes, and holds it whole: every weights file as `generate` checks it before reading a tensor, the
    tokenizer of the digest recorded. A folder damaged since (a copy cut short) is written again, as every reader's
    refusal of it advises."""
    from megadalle.data.digest import sha256
    from megadalle.errors import UserError
    from megadalle.sampling.load import check_model

    output = Path(output)
    manifest = json_object(output / MANIFEST) if is_bundle(output) else None  # None where garbled: rewritten
    if manifest is None or manifest.get(EXPORT_KEY) != record:
        return False
    models = {TRANSFORMER: "transformer", DVAE: "dvae"}
    if isinstance(manifest.get("clip"), str) and manifest.get("clip_model") == "megadalle":
        models[manifest["clip"]] = "clip"
    try:
        for name, kind in models.items():
            check_model(output / name, kind)
        return sha256(output / TOKENIZER) == manifest.get("sha256", {}).get("tokenizer")
    except (UserError, OSError):
        return False
