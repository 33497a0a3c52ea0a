"""The tokenizer a megadalle CLIP was trained with, as its records say: what `check_files` compares the tokenizer
in use with.

A CLIP reads BPE ids; a tokenizer of the same size but other contents (another corpus's, or one retrained in place)
gives the prompt ids that mean other words to it, and it ranked the samples by noise with exit code 0 (measured on
the demo's data: 0 of 64 captions matched to their image, 13 of 64 with its own tokenizer). A train-clip run's
run.json records its tokenizer's sha256 (`rundir.digests`); the export of the run (train-clip's at its end, or
`megadalle export`) writes that record into the config JSON beside the weights (`clip.json`, key TOKENIZER,
`export_record`), which `export` copies into a model folder with them.
"""
from __future__ import annotations

from pathlib import Path

from megadalle import run_pieces
from megadalle.sampling.compatible import TokenizerRecord

TOKENIZER = "tokenizer"
"""The key of an exported CLIP's config JSON holding {"sha256", "path"} of the tokenizer it was trained with."""
RUN_KEY = "tokenizer"
"""train-clip's key for its tokenizer, in its run.json's config and sha256 record."""


def export_record(run: Path) -> dict:
    """What the export of the train-clip run `run` adds to its config JSON: the record of its tokenizer; nothing for
    a run.json from before the digests (its export stays unrecorded, as the run is)."""
    record = run_pieces.read(run)
    digest = record.get("sha256", {}).get(RUN_KEY)
    if digest is None:
        return {}
    return {TOKENIZER: _entry(digest, run_pieces.lookup(record.get("config", {}), RUN_KEY))}


def _entry(digest: str, tokenizer: str | Path) -> dict:
    return {"sha256": digest, "path": str(tokenizer)}


def recorded(clip: Path) -> TokenizerRecord | None:
    """What the CLIP at `clip` (a train-clip run directory, or exported weights) records of its tokenizer; None
    where nothing does (weights exported before the record, or by another tool)."""
    from megadalle.sampling.load import is_run
    from megadalle.weights import config_path
    from megadalle.weights.records import json_object

    clip = Path(clip)
    if is_run(clip):
        record = run_pieces.read(clip)
        digest = record.get("sha256", {}).get(RUN_KEY)
        path, where = run_pieces.lookup(record.get("config", {}), RUN_KEY), clip / "run.json"
    else:
        where = config_path(clip)
        entry = (json_object(where) or {}).get(TOKENIZER) if where.is_file() else None
        entry = entry if isinstance(entry, dict) else {}
        digest, path = entry.get("sha256"), entry.get("path")
    return None if not isinstance(digest, str) else TokenizerRecord(digest, str(path), str(where))
