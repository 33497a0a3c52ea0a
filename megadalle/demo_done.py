"""What a rerun of `megadalle demo` need not make again: its data stages' records, `<output>/made/<stage>.json`.

A stage's record holds what its outputs were made from (the demo's sizes and seed, the dVAE's weights) and is
written once the outputs are complete, after them; it is removed before the stage starts again. A rerun whose
record matches, with the outputs still there, keeps them: drawing the images again took ~20 s and, with new
modification times on the same shards, made encode re-encode them all (encode.py's records compare the input
shard's mtime). Stopped halfway, a stage has no record and is made again from the start.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from megadalle.data import atomic

MADE = "made"


def record_path(out: Path, stage: str) -> Path:
    return out / MADE / f"{stage}.json"


def is_made(out: Path, stage: str, inputs: dict, outputs: list[Path]) -> bool:
    """Whether an earlier run made `stage` from the same `inputs` and its `outputs` are all still there."""
    record = record_path(out, stage)
    try:
        same = json.loads(record.read_text()) == inputs
    except (OSError, ValueError):
        return False
    return same and all(path.exists() for path in outputs)


def once(out: Path, stage: str, inputs: dict, outputs: list[Path], make: Callable[[], object]) -> bool:
    """Run `make` unless `stage` is made from `inputs` already (`is_made`), then record it; whether it ran."""
    if is_made(out, stage, inputs, outputs):
        print(f"[demo] {stage}: kept from an earlier run ({', '.join(str(p.relative_to(out)) for p in outputs)})",
              flush=True)
        return False
    record = record_path(out, stage)
    record.unlink(missing_ok=True)  # until `make` is done, the outputs are not this stage's
    make()
    atomic.write_json(record, inputs)
    return True
