"""Checks a verb's config before anything starts (no process group, no DeepSpeed, no worker).

A wrong path or shards that do not fit the model used to surface after DeepSpeed had started, as a
traceback on every rank (or worse, as an index error deep in an embedding). Here every such mistake
is a PreflightError naming the key, the value and what was expected; the CLI prints it once (rank 0)
and exits with code 2. The checks read only small files: index.json, a weights' config JSON and the
tokenizer model; and they make nothing but an empty probe folder, removed at once, where an output or a run
directory will go (`probes.can_make`). Two exceptions: a directory of tars written elsewhere, with no index.json,
is indexed here (`ingest.open_index`, as every reader would on first use), since its index is what
the checks read; and the sample grids' dVAE is read whole (tens of MB) to check it is the one the token shards
were encoded with (codes_dvae.py).

Here are the entry point and the table of each verb's checks; the checks live beside it, one family a module:
probes.py (paths, shards, tokenizer, places to write), image_size.py, train_verbs.py, validation.py (the
validation split), token_grid.py and codes_dvae.py (token shards against the model and their dVAE), runs.py (a
training run's keys and directory), data_verbs.py (prepare, tokenizer, encode), weights_verbs.py (export,
generate, evaluate, import-dvae) and demo.py (the demo's output folder).
"""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig, OmegaConf

from megadalle.config.required import check_required
from megadalle.preflight.data_verbs import check_encode, check_index, check_prepare, check_tokenizer
from megadalle.preflight.demo import check_demo
from megadalle.preflight.probes import WARNINGS, fits
from megadalle.preflight.runs import RUN_TASKS, check_run_dir, check_run_keys
from megadalle.preflight.train_verbs import (check_ema_swap, check_logger, check_precision, check_train,
                                             check_train_clip, check_train_dvae)
from megadalle.preflight.weights_verbs import check_evaluate, check_export, check_generate, check_import_dvae

CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "prepare": check_prepare,
    "index": check_index,
    "tokenizer": check_tokenizer,
    "train-dvae": check_train_dvae,
    "import-dvae": check_import_dvae,
    "encode": check_encode,
    "train-clip": check_train_clip,
    "train": check_train,
    "export": check_export,
    "generate": check_generate,
    "evaluate": check_evaluate,
    "demo": check_demo,
}
"""Per-verb checks; a verb without an entry is checked for required keys only."""


def check_out_dir(cfg: DictConfig) -> None:
    """`out_dir` is the folder under which runs and outputs go (`<out_dir>/<task>/<name>`, `${out_dir}/generate`):
    null would be the text `None` there, a folder of that name beside the command."""
    fits(cfg.get("out_dir") is not None, "out_dir=null: the folder runs and outputs go under cannot be null; give one "
                                         "(out_dir=outputs, the default)")


PATH_NAMES = frozenset({"input", "output", "dir", "out_dir", "run_dir", "weights", "dvae_weights", "clip_weights",
                        "tokenizer", "shards", "val_shards", "real", "captions", "report", "encoder", "decoder",
                        "feature_weights", "run"})
"""The names of the keys, in any group, that name a file or folder (`check_no_empty_path`)."""


def check_no_empty_path(cfg: DictConfig) -> None:
    """A path key given empty (`output=`) is refused: it named the current folder, and generate, evaluate and train
    wrote their files into the folder the command ran in (`out_dir=` put generate's under /generate)."""
    from megadalle.train.rundir import flatten

    for key, value in flatten(OmegaConf.to_container(cfg, resolve=False)).items():
        fits(not (key.rpartition(".")[2] in PATH_NAMES and isinstance(value, str) and not value.strip()),
             f"{key}={value!r}: an empty path, which would be the folder the command runs in; give a path")


def preflight(verb: str, cfg: DictConfig) -> None:
    """Required keys first (a check below may read them), then where outputs go, then the verb's own checks; their
    warnings once all have passed (probes.warn), on rank 0."""
    WARNINGS.clear()
    check_required(cfg)
    check_no_empty_path(cfg)
    check_out_dir(cfg)
    if verb in RUN_TASKS:
        check_run_keys(cfg)
    check = CHECKS.get(verb)
    if check is not None:
        check(cfg)
    if verb in RUN_TASKS:
        check_precision(cfg)
        check_ema_swap(cfg)
        check_logger(cfg)
        check_run_dir(verb, cfg)
    say_warnings()


def say_warnings() -> None:
    """The checks' warnings (probes.warn), once, by rank 0 of a multi-process run."""
    import sys

    from megadalle.train.distributed import detect

    if detect().rank == 0:
        for text in WARNINGS:
            print(text, file=sys.stderr, flush=True)
    WARNINGS.clear()
