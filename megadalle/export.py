"""`megadalle export run=DIR output=FOLDER`: a training run as a model folder, or as user weights alone.

The work is megadalle.train.consolidate's (streaming, whatever layout trained the run) and
megadalle.bundle_write's (the folder with tokenizer, dVAE and CLIP beside the Transformer); this verb only
parses its keys (megadalle.config.export), picks one, and reports which weights it wrote (`ema`).
`export` and `load_run` are re-exported for callers above train/ (the demo).
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.ema import ema_choice
from megadalle.config.export import ExportConfig
from megadalle.train.consolidate import chosen_ema, export, load_run, run_task
from megadalle.weights import exported_checkpoint, one_file

__all__ = ["export", "load_run", "run"]


def run(cfg: DictConfig) -> int:
    """The export, and one line saying what it wrote: the EMA or the live weights, `ema=auto` choosing per run
    (an EMA shipped in silence, or left out in silence, is not the model the user thinks they share). The run's
    task is rebuilt from its run.json once, here, and handed on."""
    ec = build(ExportConfig, top_level(cfg, ExportConfig), "")
    trained = run_task(ec.run)
    task, config = trained
    ema = chosen_ema(ec.run, config, ema_choice(ec.ema))  # ema=true of a run without one: refused before a write
    kind = task.export_spec().kind
    dtype = ec.dtype_for(kind)
    weights = f"{dtype}, {'the EMA weights' if ema else 'the live weights'}"
    if ec.weights_only or one_file(ec.output):
        path = export(ec.run, ec.output, ec.checkpoint, ema, dtype, ec.max_shard_mb * 10**6, trained=trained,
                      alone=True)
        print(f"[export] wrote {path} ({weights}{of_checkpoint(path)})", file=sys.stderr)
        return 0
    from megadalle.bundle_write import write_bundle, written
    from megadalle.sampling.files import TRANSFORMER

    done = done_already(ec, ema, dtype) if kind == "transformer" else None  # else refused by write_bundle
    if done is not None:
        print(f"[export] {ec.output}: done already (the same export{done}): nothing written", file=sys.stderr)
        return 0
    folder = write_bundle(ec.run, ec.output, ec.tokenizer, ec.dvae_weights, ec.clip_weights, ec.checkpoint, ema,
                          ec.clip_model, dtype, ec.max_shard_mb * 10**6, trained)
    print(f"[export] wrote model folder {folder} ({weights}{of_checkpoint(folder / TRANSFORMER)}): "
          f"{', '.join(written(folder))}", file=sys.stderr)
    return 0


def done_already(ec: ExportConfig, ema: bool, dtype: str) -> str | None:
    """` of step_N` where the model folder `ec.output` already holds the export `ec` asks for (bundle_current.py),
    so the command writes nothing; None where it writes the folder."""
    from pathlib import Path

    from megadalle import run_pieces
    from megadalle.bundle_current import current, export_record
    from megadalle.bundle_write import bundle_files
    from megadalle.sampling.files import TRANSFORMER, is_bundle
    from megadalle.train.consolidate import checkpoint_dir

    if not is_bundle(ec.output):
        return None
    run = Path(ec.run)
    files = bundle_files(run, run_pieces.read(run), ec.tokenizer, ec.dvae_weights, ec.clip_weights)
    record = export_record(run, files, checkpoint_dir(run, ec.checkpoint).name, ema, dtype, ec.max_shard_mb * 10**6,
                           ec.clip_model)
    return of_checkpoint(Path(ec.output) / TRANSFORMER) if current(ec.output, record) else None


def of_checkpoint(weights) -> str:
    """` of step_00000600`: the checkpoint the exported `weights` were read from, as their record says: exports of a
    run still training were each of an unknown step."""
    checkpoint = exported_checkpoint(weights)
    return f" of {checkpoint}" if checkpoint else ""


if __name__ == "__main__":  # `python -m megadalle.export ARGS` is `megadalle export ARGS`
    from megadalle.cli import run_verb

    run_verb("export")
