"""The models a sampling verb samples with, loaded from the files its keys name (megadalle.sampling.files): a model
folder written by `export output=FOLDER`, a training run directory, or exported weights with their pieces beside
them. `generate` and `evaluate` find the files once and open them here (`open_models`); `megadalle.load_pipeline`
does both for Python callers.

The Transformer is read by `read_model` alone (and written by megadalle.bundle_write.export_transformer), so a change
of its on-disk format touches those two functions only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from megadalle.errors import BundleError
from megadalle.sampling.files import FORMAT, SamplingFiles, folder_of_transformer, is_bundle, sampling_files
from megadalle.warn import say_all
from megadalle.weights import MANIFEST, read_record


@dataclass
class Pipeline:
    """What `load_pipeline` returns: the models in eval mode on `device` and the tokenizer."""

    transformer: nn.Module
    dvae: nn.Module
    clip: nn.Module | None
    """megadalle's CLIP or the open_clip model; None when the folder has none."""
    reranker: Any
    """`clip` behind `scores(images, prompt)` (sampling.rerank.Reranker), with its tokenizer; or None."""
    tokenizer: Any
    manifest: dict


def read_model(path: str | Path, kind: str, ema: bool | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> nn.Module:
    """A model from its weights (the one reading of weights by the sampling verbs and `load_pipeline`)."""
    from megadalle.sampling.load import load_model

    return load_model(path, kind, ema, dtype, device)


def check_ema(files: SamplingFiles, ema: bool | None) -> None:
    """`ema=true` chooses a run directory's EMA weights; exported weights are what they were exported as (a
    model folder's bundle.json says which), and reading them while asked for the EMA would pass in silence. A run
    directory that trained no EMA is refused for it here, before any weights are read. `ema=auto` (None) reads
    exported weights as they are and a run's EMA where it trained one (train.consolidate.chosen_ema)."""
    from megadalle.sampling.load import is_run
    from megadalle.train.consolidate import run_ema

    if ema and not is_run(files.transformer):
        exported = files.manifest.get("ema")
        what = "" if exported is None else f" (exported with ema={str(exported).lower()})"
        raise BundleError(f"ema=true reads the EMA of a training run directory; {files.transformer} holds exported "
                          f"weights{what}: drop ema=true, or export the run with ema=true")
    for path in (files.transformer, files.dvae, files.clip) if ema else ():
        if path is not None and is_run(path):
            run_ema(path, ema)


def open_models(files: SamplingFiles, ema: bool | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, check_text: Callable[[Any], None] | None = None) -> Pipeline:
    """What a sampling verb samples with, from the files its keys name (`sampling_files`, found once by the verb,
which states the same files in its resume key: sampling/resume.py). Everything a config or a record tells
    is checked before a tensor is read: the device, `ema` (None: each run directory's EMA where it trained one),
    the files and whether they were trained together, and with `check_text` (called with the Tokenizer) what the
    verb will sample (a prompt the tokenizer reads nothing of). The dVAE is read next, and compared as read (the
    weights that decode, `ema` included) with the one whose codes the Transformer learnt (dvae_record.check); the
    reranker after it, so that a wrong dVAE or a bad CLIP file fails before a large Transformer has loaded. The
    checks' warnings are said once all has loaded. The Transformer in `dtype`, the dVAE and CLIP in float32, all on
    `device`; `manifest` is a model folder's bundle.json ({} for other weights)."""
    from megadalle.data.tokenizer import Tokenizer
    from megadalle.devices import pick_device
    from megadalle.sampling import dvae_record
    from megadalle.sampling.compatible import check_files
    from megadalle.sampling.load import is_run
    from megadalle.sampling.rerank import MegadalleClip, load_reranker

    device = pick_device(str(device))  # a GPU this machine lacks is named now, not deep inside a load
    check_ema(files, ema)
    warnings = check_files(files.transformer, files.dvae, files.clip if files.clip_model == "megadalle" else None,
                           files.tokenizer, files.tokenizer_record)
    words = Tokenizer(files.tokenizer)
    if check_text is not None:
        check_text(words)
    decoder = read_model(files.dvae, "dvae", ema)
    read_as = "ema=false" if ema is False and is_run(files.dvae) else ""  # a run's live weights, not its export
    dvae_record.check(files.dvae, files.codes_record, decoder, read_as)
    decoder = decoder.to(device)
    reranker = load_reranker(files.clip_model, files.clip, words, device,
                             lambda path, kind: read_model(path, kind, ema)) if files.want_clip else None
    clip_module = None if reranker is None else reranker.clip if isinstance(reranker, MegadalleClip) else reranker.model
    transformer = read_model(files.transformer, "transformer", ema, dtype, device)
    say_all(warnings)
    return Pipeline(transformer, decoder, clip_module, reranker, words, files.manifest)


def load_pipeline(weights: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32,
                  ema: bool | None = None, rerank: bool = True, dvae_weights: str | None = None,
                  tokenizer: str | None = None, clip_weights: str | None = None,
                  clip_model: str = "megadalle") -> Pipeline:
    """The models and tokenizer that `megadalle generate weights=WEIGHTS` samples with, found as it finds them
    (`sampling_files`, with generate's keys of the same names): a model folder written by `export output=FOLDER`
    (or its transformer/ inside), a training run directory, or exported weights with their pieces beside them.
    The Transformer in `dtype`, named as `generate` names it (auto, fp32, bf16: megadalle.devices.pick_dtype) or a
    floating torch.dtype, the dVAE and CLIP in float32; `ema` as generate's (None = auto); `rerank=False` reads no
    CLIP (a model folder exported without one has none, unless `clip_weights` is given)."""
    from megadalle.config.ema import ema_argument
    from megadalle.devices import pick_device, pick_dtype

    ema = ema_argument(ema)
    if not isinstance(rerank, bool):  # "false" is truthy: a CLIP was read where none was asked for
        raise ValueError(f"rerank={rerank!r}: expected True or False")
    device = pick_device(str(device))
    dtype = pick_dtype(dtype, device)
    folder = folder_of_transformer(Path(weights))
    if is_bundle(folder):
        manifest = read_record(folder / MANIFEST)
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        rerank = rerank and bool(manifest.get("clip") or clip_weights)
    files = sampling_files(folder, dvae_weights, tokenizer, clip_weights, clip_model, rerank, "rerank=False")
    return open_models(files, ema, device, dtype)
