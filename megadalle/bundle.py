"""One model folder: everything `generate` needs, written by `export output=FOLDER`, read by `load_pipeline`.

    FOLDER/
      bundle.json              what is where, and the Transformer run's config (the record of how it was trained),
                               the tokenizer's sha256 and the digest of the dVAE whose codes it learnt
      transformer/             the Transformer: safetensors shards + model.safetensors.index.json + config.json
      tokenizer.model          sentencepiece BPE model
      dvae.safetensors         dVAE (+ dvae.json)
      clip.safetensors         CLIP reranker (+ clip.json); for `clip_model=open_clip:<arch>` the open_clip state
                               dict (the arch is in bundle.json); absent when none was given (no rerank)

Tokenizer, dVAE and CLIP default to what the run's own config records (`data.tokenizer`, and
`dvae_weights` / `clip_weights` where the run has them); a key given to `export` wins. The names
are the ones `generate` looks for beside its `weights`, so `generate weights=FOLDER` loads it (run_pieces.py).
bundle.json records the tokenizer's sha256, as the run's run.json does: a tokenizer whose contents are not
the recorded ones is refused by `export` and by every reader of the folder or the run (compatible.py). So is a dVAE
whose weights are not those that encoded the run's token shards, where run.json records their digest (copied into
bundle.json, `codes_dvae`: sampling/dvae_record.py).
The Transformer is written by `export_transformer` (streamed, bf16 by default) and read by `read_model`
alone, so a change of its on-disk format touches those two functions only.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from megadalle.data import atomic
from megadalle import run_pieces
from megadalle.errors import BundleError
from megadalle.sampling.compatible import TokenizerRecord
from megadalle.sampling.dvae_record import BUNDLE_KEY, RUN_KEY, CodesRecord
from megadalle.warn import say_all
from megadalle.weights import INDEX, MANIFEST, TMP, check_replaceable, read_record, shard_of

FORMAT = "megadalle-bundle/1"
TRANSFORMER, DVAE, CLIP, TOKENIZER = "transformer", "dvae.safetensors", "clip.safetensors", "tokenizer.model"


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


def export_transformer(run_dir: str | Path, path: Path, checkpoint: str | None = None, ema: bool = False,
                       dtype: str = "bf16", max_shard_bytes: int = 5 * 10**9,
                       before_replace: Callable[[], None] | None = None) -> Path:
    """The run's Transformer weights in the folder `path` (the one call of the Transformer export);
    `before_replace` is called once they are complete, just before an earlier export's are replaced."""
    from megadalle.export import export

    return export(run_dir, path, checkpoint, ema, dtype, max_shard_bytes, before_replace)


def read_model(path: str | Path, kind: str, ema: bool | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> nn.Module:
    """A model from its weights (the one reading of weights for bundles and `generate`)."""
    from megadalle.sampling.load import load_model

    return load_model(path, kind, ema, dtype, device)


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def unfinished(path: str | Path) -> bool:
    """A folder `write_bundle` began and did not finish (killed, or a disk filled): its Transformer or the
    temporary of one, without bundle.json (written last)."""
    path = Path(path)
    return (path.is_dir() and not is_bundle(path)
            and ((path / TRANSFORMER).is_dir() or any(path.glob(f"{TRANSFORMER}{TMP}*"))))


def check_output(output: str | Path) -> None:
    """`export` writes a model folder where nothing is, in an empty folder, or over an earlier export (finished or
    not), and never among other files (a run directory, image shards, a generate output)."""
    check_replaceable(output, lambda folder: is_bundle(folder) or unfinished(folder),
                      f"a model folder (no {MANIFEST})")


def folder_of_transformer(path: Path) -> Path:
    """The model folder whose Transformer `path` is (`FOLDER/transformer`, or its index JSON): the folder is what
    is read, under its bundle.json's rules (its tokenizer's sha256, its reranker, a folder exported without
    CLIP), not the files beside its Transformer; an unfinished one is said to be so. Anything else is `path`."""
    transformer = path.parent if path.name == INDEX else path
    folder = transformer.parent
    return folder if transformer.name == TRANSFORMER and (is_bundle(folder) or unfinished(folder)) else path


def transformer_path(weights: str | Path) -> Path:
    """The Transformer's weights behind a sampling verb's `weights`: a model folder holds it under its own name;
    anything else is the Transformer itself."""
    return Path(weights) / TRANSFORMER if is_bundle(weights) else Path(weights)


@dataclass(frozen=True)
class SamplingFiles:
    """What a sampling verb reads: the Transformer, the dVAE and tokenizer beside it, and the reranker's."""

    transformer: Path
    dvae: Path
    tokenizer: Path
    clip: Path | None
    """None: no CLIP (not asked for), or an open_clip reranker whose weights were not given."""
    clip_model: str
    manifest: dict
    """A model folder's bundle.json; {} for other weights."""
    tokenizer_record: TokenizerRecord | None = None
    """The sha256 that the folder's bundle.json or the run's run.json records of its tokenizer; None for other
    weights and for records older than the digests."""
    codes_record: CodesRecord | None = None
    """The digest that the folder's bundle.json or the run's run.json records of the dVAE whose codes the Transformer
    learnt; None for other weights, older records and token shards that recorded none."""


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


def sampling_files(weights: str | Path, dvae: str | None = None, tokenizer: str | None = None,
                   clip: str | None = None, clip_model: str = "megadalle", want_clip: bool = True,
                   without_clip: str = "rerank=false") -> SamplingFiles:
    """The files behind a sampling verb's keys. A path given is taken as given. A model folder's pieces are the
    ones its bundle.json names and no others: a folder exported without CLIP has none, whatever file lies
    beside the folder (that one belongs to another model). A Transformer run directory's are where its run.json
    records them (`run_pieces.RECORDED_PIECES`, as export reads them: `run_pieces.recorded`), so that the run and its
    export sample with the same files; where it records none, or a file no longer there (the refusal names it), and
    for plain weights, the default names beside (`sampling.load.beside`). The CLIP is looked for only when
    `want_clip`; missing, it is refused with `without_clip`, the key that does without it."""
    from megadalle.sampling.load import ModelNotFound, beside, checkpoint_in_run, is_run
    from megadalle.sampling.rerank import OPEN_CLIP

    weights = folder_of_transformer(Path(weights))
    shards = shard_of(weights)
    if shards is not None:  # one shard is no model: its config and the other shards are its folder's
        folder = folder_of_transformer(shards)
        raise BundleError(f"weights={weights}: one shard of the weights in {folder}; pass weights={folder}")
    in_run = checkpoint_in_run(weights)
    if in_run is not None:  # a DeepSpeed checkpoint is no weights: its run's record rebuilds the model from it
        run, step = in_run
        older = "" if step is None else (f", or to sample {step.name}: megadalle export run={run} checkpoint={step} "
                                         "output=DIR, then weights=DIR")
        raise BundleError(f"weights={weights}: inside the checkpoints of the training run {run}; pass weights={run} "
                          f"(it samples the newest checkpoint){older}")
    if unfinished(weights):
        raise BundleError(f"{weights}: unfinished export (no {MANIFEST}): rerun `megadalle export` with "
                          f"output={weights}")
    manifest = read_record(weights / MANIFEST, "tokenizer", "dvae") if is_bundle(weights) else None
    if manifest is not None and clip_model == "megadalle":  # the key's default: the folder's own reranker wins
        clip_model = manifest.get("clip_model", "megadalle")
    record = run_pieces.read(weights) if manifest is None and is_run(weights) else None

    def piece(given: str | None, key: str, name: str) -> Path | None:
        if given:
            return Path(given)
        if manifest is not None:
            return weights / manifest[key] if manifest.get(key) else None
        path = run_pieces.recorded(weights, record, key) if record is not None else None
        if path is not None and path.exists():
            return path
        try:
            return beside(weights, None, name)
        except ModelNotFound as err:
            if path is None:
                raise
            raise ModelNotFound(f"{run_pieces.source(weights, key)}={path} is not there, and {err}") from None

    clip_path = None
    if want_clip and (clip or manifest is not None or not clip_model.startswith(OPEN_CLIP)):
        try:
            clip_path = piece(clip, "clip", CLIP)
        except ModelNotFound as err:
            raise ModelNotFound(f"{err}, or pass {without_clip} to do without CLIP") from None
        if clip_path is None:
            raise BundleError(f"{weights} was exported without a CLIP: pass {without_clip}, or clip_weights=FILE")
    return SamplingFiles(transformer_path(weights), piece(dvae, "dvae", DVAE), piece(tokenizer, "tokenizer", TOKENIZER),
                         clip_path, clip_model, manifest or {}, _tokenizer_record(weights, manifest, record),
                         _codes_record(weights, manifest, record))


def _tokenizer_record(where: Path, manifest: dict | None, record: dict | None) -> TokenizerRecord | None:
    """What a model folder's bundle.json (`manifest`) or a run's run.json (`record`) says of its tokenizer."""
    if manifest is not None:
        digest, path = manifest.get("sha256", {}).get("tokenizer"), manifest.get("sources", {}).get("tokenizer")
        name = MANIFEST
    elif record is not None:
        key = run_pieces.RECORDED_PIECES["tokenizer"]
        digest, name = record.get("sha256", {}).get(key), "run.json"
        path = run_pieces.lookup(record.get("config", {}), key)
    else:
        return None
    return None if digest is None else TokenizerRecord(digest, str(path), str(where / name))


def _codes_record(where: Path, manifest: dict | None, record: dict | None) -> CodesRecord | None:
    """What a model folder's bundle.json (`manifest`) or a run's run.json (`record`) says of the dVAE whose codes its
    Transformer learnt."""
    if manifest is not None:
        digest, name = manifest.get(BUNDLE_KEY), MANIFEST
    elif record is not None:
        digest, name = record.get("sha256", {}).get(RUN_KEY), "run.json"
    else:
        return None
    return CodesRecord(digest, str(where / name)) if isinstance(digest, str) else None


def _is_itself(source: Path, target: Path) -> bool:
    """Whether `target` already is `source`: a newer checkpoint re-exported with the folder's own tokenizer, dVAE
    or CLIP (`tokenizer=model/tokenizer.model`) keeps that file as it stands (a copy onto itself fails)."""
    return target.exists() and source.samefile(target)


def _copy(source: Path, target: Path) -> None:
    """`source` as `target`, unless it is that very file (`_is_itself`)."""
    if not _is_itself(source, target):
        shutil.copyfile(source, target)


def _copy_weights(source: Path, target: Path) -> None:
    """A weights file (checked by `_check_pieces`) and its config JSON."""
    from megadalle.weights import config_path

    _copy(config_path(source), config_path(target))
    _copy(source, target)


def _remove_weights(path: Path) -> None:
    """A weights file an earlier export wrote, and its config JSON."""
    from megadalle.weights import config_path

    config_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _copy_open_clip(source: Path, target: Path) -> None:
    """An open_clip state dict (checked by `_check_pieces`) as safetensors; the folder's own already is."""
    from safetensors.torch import save_file

    from megadalle.sampling.rerank import read_state_dict

    if not _is_itself(source, target):
        save_file({k: v.contiguous() for k, v in read_state_dict(source).items()}, str(target))


def _check_pieces(files: dict[str, Path | None], own_clip: bool, clip_model: str, codes: CodesRecord | None) -> None:
    """The dVAE and CLIP read as what they are said to be, as `generate` will read them (`read_model`: the model
    their JSON describes, its tensors' names and shapes checked before one is read): a swapped file, a JSON that
    does not fit its tensors, an open_clip state dict that does not fit its architecture. The dVAE is then compared
    with the one whose codes the Transformer learnt (`codes`, dvae_record.check). All before the Transformer export
    begins: nothing is refused once it has replaced an earlier export's."""
    from megadalle.sampling import dvae_record
    from megadalle.sampling.rerank import OPEN_CLIP, load_open_clip

    dvae_record.check(files["dvae"], codes, read_model(files["dvae"], "dvae"))
    if own_clip:
        read_model(files["clip"], "clip")
    elif files["clip"] is not None:
        load_open_clip(clip_model[len(OPEN_CLIP):], files["clip"])


def write_bundle(run: str | Path, output: str | Path, tokenizer: str | None = None, dvae_weights: str | None = None,
                 clip_weights: str | None = None, checkpoint: str | None = None, ema: bool | None = None,
                 clip_model: str = "megadalle", dtype: str = "bf16", max_shard_bytes: int = 5 * 10**9) -> Path:
    """Export a Transformer run with its tokenizer, dVAE and (optional) CLIP into the folder `output`;
    `clip_model=open_clip:<arch>` takes an open_clip state dict as the CLIP. `ema`: the run's EMA, its live
    weights, or None for its EMA where it trained one (train.consolidate.chosen_ema); bundle.json records which."""
    from megadalle.data.digest import sha256
    from megadalle.sampling.rerank import OPEN_CLIP

    from megadalle.sampling.compatible import check_files
    from megadalle.sampling.load import model_config
    from megadalle.train.consolidate import chosen_ema

    check_output(output)
    run, output = Path(run), Path(output)
    record = run_pieces.read(run)
    config = record.get("config", {})
    model_config(run, "transformer")  # a model folder is a Transformer's: refuse a dVAE or CLIP run by name
    ema = chosen_ema(run, config, ema)
    files = {"tokenizer": run_pieces.pick(tokenizer, run, record, "tokenizer", True),
             "dvae": run_pieces.pick(dvae_weights, run, record, "dvae", True),
             "clip": run_pieces.pick(clip_weights, run, record, "clip", False)}
    own_clip = files["clip"] is not None and not clip_model.startswith(OPEN_CLIP)
    codes = _codes_record(run, None, record)
    warnings = check_files(run, files["dvae"], files["clip"] if own_clip else None, files["tokenizer"],
                           _tokenizer_record(run, None, record))
    _check_pieces(files, own_clip, clip_model, codes)
    created = not output.exists()
    earlier_clip = is_bundle(output) and read_record(output / MANIFEST).get("clip") == CLIP
    output.mkdir(parents=True, exist_ok=True)
    try:
        # An earlier export stands whole until the new Transformer is complete (a refused checkpoint or EMA, a
        # failed read, a kill leave it working); from its replacement until the manifest is back (written
        # last), the folder is unfinished.
        export_transformer(run, output / TRANSFORMER, checkpoint, ema, dtype, max_shard_bytes,
                           lambda: (output / MANIFEST).unlink(missing_ok=True))
        _copy(files["tokenizer"], output / TOKENIZER)
        _copy_weights(files["dvae"], output / DVAE)
        if own_clip:
            _copy_weights(files["clip"], output / CLIP)
        elif files["clip"] is not None:
            _copy_open_clip(files["clip"], output / CLIP)
        elif earlier_clip:  # an export with a CLIP wrote this folder before: its CLIP is not this model's
            _remove_weights(output / CLIP)
    except BaseException:
        if created:  # a folder this export made holds nothing usable: it goes, not to be taken for a model
            shutil.rmtree(output, ignore_errors=True)
        raise
    manifest = {"format": FORMAT, "transformer": TRANSFORMER, "tokenizer": TOKENIZER, "dvae": DVAE,
                "clip": CLIP if files["clip"] is not None else None, "clip_model": clip_model, "ema": ema,
                "sources": {"run": str(run), **{k: None if v is None else str(v) for k, v in files.items()}},
                "sha256": {"tokenizer": sha256(output / TOKENIZER)},
                BUNDLE_KEY: None if codes is None else codes.digest, "run_config": config}
    atomic.write_json(output / MANIFEST, manifest)
    say_all(warnings)  # once nothing can refuse the export any more
    return output


def open_models(weights: str | Path, dvae: str | None = None, tokenizer: str | None = None, clip: str | None = None,
                clip_model: str = "megadalle", want_clip: bool = True, without_clip: str = "rerank=false",
                ema: bool | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                check_text: Callable[[Any], None] | None = None) -> Pipeline:
    """What a sampling verb samples with, from its keys (`sampling_files`). Everything a config or a record tells
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
    files = sampling_files(weights, dvae, tokenizer, clip, clip_model, want_clip, without_clip)
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
                             lambda path, kind: read_model(path, kind, ema)) if want_clip else None
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
    from megadalle.devices import pick_device, pick_dtype

    device = pick_device(str(device))
    dtype = pick_dtype(dtype, device)
    folder = folder_of_transformer(Path(weights))
    if is_bundle(folder):
        manifest = read_record(folder / MANIFEST)
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        rerank = rerank and bool(manifest.get("clip") or clip_weights)
    return open_models(folder, dvae_weights, tokenizer, clip_weights, clip_model, rerank, "rerank=False", ema,
                       device, dtype)
