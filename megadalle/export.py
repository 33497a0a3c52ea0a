"""`megadalle export run=DIR output=FOLDER`: a training run as a model folder, or as user weights alone.

The work is megadalle.train.consolidate's (streaming, whatever layout trained the run) and
megadalle.bundle's (the folder with tokenizer, dVAE and CLIP beside the Transformer); this verb only
parses its keys (megadalle.config.export), picks one, and reports which weights it wrote (`ema`).
`export` and `load_run` are re-exported for callers above train/ (the demo).
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from megadalle.config import build, top_level
from megadalle.config.ema import ema_choice
from megadalle.config.export import ExportConfig
from megadalle.train.consolidate import export, load_run, run_ema, run_task
from megadalle.weights import TMP, OutputInTheWay, one_file

__all__ = ["export", "load_run", "run"]


def run(cfg: DictConfig) -> int:
    """The export, and one line saying what it wrote: the EMA or the live weights, `ema=auto` choosing per run
    (an EMA shipped in silence, or left out in silence, is not the model the user thinks they share)."""
    ec = build(ExportConfig, top_level(cfg, ExportConfig), "")
    if ec.weights_only:
        check_outside_model_folder(ec)
    ema = run_ema(ec.run, ema_choice(ec.ema))  # ema=true of a run without an EMA is refused before anything is written
    kind = run_kind(ec.run)
    dtype = ec.dtype_for(kind)
    weights = f"{dtype}, {'the EMA weights' if ema else 'the live weights'}"
    if ec.weights_only or one_file(ec.output):
        path = export(ec.run, ec.output, ec.checkpoint, ema, dtype, ec.max_shard_mb * 10**6)
        if kind == "clip":  # generate and evaluate then check the tokenizer in use against the CLIP's own
            from megadalle.sampling import clip_record

            clip_record.copy_to_export(Path(ec.run), path)
        print(f"[export] wrote {path} ({weights})", file=sys.stderr)
        return 0
    from megadalle.bundle import write_bundle

    folder = write_bundle(ec.run, ec.output, ec.tokenizer, ec.dvae_weights, ec.clip_weights, ec.checkpoint, ema,
                          ec.clip_model, dtype, ec.max_shard_mb * 10**6)
    print(f"[export] wrote model folder {folder} ({weights}): "
          + ", ".join(sorted(p.name for p in folder.iterdir() if TMP not in p.name)), file=sys.stderr)
    return 0


def run_kind(run_dir: str) -> str:
    """The kind of model the run trained ("transformer", "dvae", "clip"), as its export records it."""
    return run_task(run_dir)[0].export_spec().kind


def check_outside_model_folder(ec: ExportConfig) -> None:
    """`weights_only` writes the Transformer alone, so not into a model folder (`output=model/transformer`): the
    folder's export checks that the run's tokenizer and dVAE are the folder's, and rewrites bundle.json, which
    would otherwise go on describing the earlier run while `generate weights=model` samples this one."""
    from megadalle.bundle import is_bundle

    folder = Path(ec.output).parent
    if is_bundle(folder):
        raise OutputInTheWay(f"output={ec.output}: inside the model folder {folder}, whose tokenizer, dVAE and "
                             f"bundle.json a Transformer exported alone would not match; export the whole folder "
                             f"with `megadalle export run={ec.run} output={folder}`, or give weights_only another path")


if __name__ == "__main__":  # `python -m megadalle.export ARGS` is `megadalle export ARGS`
    from megadalle.cli import run_verb

    run_verb("export")
