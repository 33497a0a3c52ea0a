"""The weights a training verb exports when its run finishes (train-dvae's dvae.safetensors, train-clip's
clip.safetensors), left as they are when they already hold what the export would write.

A rerun of a finished run trains nothing, and its export rewrote the same bytes with a new modification time:
`generate` and `evaluate` record the files behind their weights by size and time (sampling/resume.py), so a stopped
generate that reranked with the CLIP could no longer continue ("other settings"), and a finished one was no longer
done. A pipeline script or a Slurm requeue reruns every stage, so a rerun must leave the weights alone. They are
current when their record (weights.records.SOURCE) names this run, its newest complete checkpoint and the same EMA
choice, and this process trained no update.
"""
from __future__ import annotations

from pathlib import Path

from megadalle.train.consolidate import checkpoint_dir, export, source_record
from megadalle.train.result import Result
from megadalle.weights.load import read_source


def export_finished(result: Result, output: Path, ema: bool) -> tuple[Path, bool]:
    """(the weights' path, whether they were written now): the run's newest checkpoint exported to `output` in fp32
    (the precision the verbs' readers, encode and generate's rerank, take), unless `current`; said on one line."""
    written = bool(result.losses) or not current(result.run_dir, output, ema)
    path = export(result.run_dir, output, ema=ema, dtype="fp32") if written else Path(output)
    print(f"[{result.verb}] weights{' (EMA)' if ema else ''}: {path} + {path.with_suffix('.json').name}"
          f"{'' if written else ' (as exported before: the run trained nothing new)'}")
    return path, written


def current(run_dir: Path, output: Path, ema: bool) -> bool:
    """Whether the weights at `output` were exported from `run_dir`'s newest complete checkpoint with `ema`."""
    return read_source(output) == source_record(run_dir, checkpoint_dir(run_dir).name, ema)
