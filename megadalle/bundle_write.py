"""`export output=FOLDER`: a Transformer run written as a model folder (its layout: megadalle.sampling.files), with
the tokenizer, dVAE and CLIP it samples with beside it.

Tokenizer, dVAE and CLIP default to what the run's own config records (`data.tokenizer`, and
`dvae_weights` / `clip_weights` where the run has them); a key given to `export` wins.
bundle.json records the tokenizer's sha256, as the run's run.json does: a tokenizer whose contents are not
the recorded ones is refused by `export` and by every reader of the folder or the run (compatible.py). So is a dVAE
whose weights are not those that encoded the run's token shards, where run.json records their digest (copied into
bundle.json, `codes_dvae`: sampling/dvae_record.py).
The Transformer is written by `export_transformer` (streamed, bf16 by default) and read by `megadalle.bundle.read_model`
alone, so a change of its on-disk format touches those two functions only.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from megadalle import run_pieces
from megadalle.bundle_current import EXPORT_KEY, export_record
from megadalle.data import atomic
from megadalle.errors import BundleError
from megadalle.folder_lock import LOCK, output_lock
from megadalle.sampling.dvae_record import BUNDLE_KEY, CodesRecord
from megadalle.sampling.files import (CLIP, DVAE, FORMAT, TOKENIZER, TRANSFORMER, is_bundle, recorded_codes,
                                      recorded_tokenizer, unfinished)
from megadalle.warn import say_all
from megadalle.weights import INDEX, MANIFEST, check_replaceable, exported_checkpoint, read_record
from megadalle.weights.records import json_object


def export_transformer(run_dir: str | Path, path: Path, checkpoint: str | None = None, ema: bool = False,
                       dtype: str = "bf16", max_shard_bytes: int = 5 * 10**9,
                       before_replace: Callable[[], None] | None = None, trained: tuple | None = None) -> Path:
    """The run's Transformer weights in the folder `path` (the one call of the Transformer export);
    `before_replace` is called once they are complete, just before an earlier export's are replaced; `trained`: the
    run's task and config (consolidate.run_task), where the caller has them already."""
    from megadalle.export import export

    return export(run_dir, path, checkpoint, ema, dtype, max_shard_bytes, before_replace, trained=trained)


def check_output(output: str | Path, kind: str | None = None, run: str | Path | None = None) -> None:
    """`export` writes a model folder where nothing is, in an empty folder, or over an earlier export (finished or
    not), and never among other files (a run directory, image shards, a generate output); nor inside another model
    folder (`kind`: the run's model, None when not known yet; `run`: named in the way out)."""
    check_replaceable(output, lambda folder: is_bundle(folder) or unfinished(folder),
                      f"a model folder (no {MANIFEST})", kind=kind, run=run)


def _is_itself(source: Path, target: Path) -> bool:
    """Whether `target` already is `source`: a newer checkpoint re-exported with the folder's own tokenizer, dVAE
    or CLIP (`tokenizer=model/tokenizer.model`) keeps that file as it stands (a copy onto itself fails)."""
    return target.exists() and source.samefile(target)


def written(folder: Path) -> list[str]:
    """The names of what an export wrote into the model folder `folder`, sorted: what else it holds (a model card
    added by hand, another verb's files) stays, and is not the export's to list as its own."""
    from megadalle.weights import config_path

    own = {MANIFEST, TRANSFORMER, TOKENIZER, *(p.name for piece in (DVAE, CLIP) for p in (Path(piece),
                                                                                         config_path(Path(piece))))}
    return sorted(p.name for p in folder.iterdir() if p.name in own)


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
    """The dVAE and CLIP checked as what they are said to be, as `generate` will read them (their JSON, and the
    names and shapes of their tensors those of the model it describes: sampling.load.check_model, from the files'
    headers): a swapped file, a JSON that does not fit its tensors; an open_clip state dict that does not fit its
    architecture (read and loaded: it has no header that says its shapes). Where the run records the dVAE whose
    codes the Transformer learnt (`codes`), the dVAE is read and compared with it (dvae_record.check); no other
    piece is read only to be copied. All before the Transformer export begins: nothing is refused once it has
    replaced an earlier export's."""
    from megadalle.sampling import dvae_record
    from megadalle.sampling.load import check_model, load_model
    from megadalle.sampling.rerank import OPEN_CLIP, load_open_clip

    if codes is None:
        check_model(files["dvae"], "dvae")
    else:
        dvae_record.check(files["dvae"], codes, load_model(files["dvae"], "dvae"))
    if own_clip:
        check_model(files["clip"], "clip")
    elif files["clip"] is not None:
        load_open_clip(clip_model[len(OPEN_CLIP):], files["clip"])


def _damaged_manifest(output: Path) -> bool:
    """Whether the model folder `output` has a damaged bundle.json (garbled, or cut short by a copy that stopped
    early) and is otherwise an export's: its Transformer, transformer/, is one an export wrote (its index records the
    kind). Its own export rewrites such a folder whole, as it does an unfinished one: "re-export the weights", the
    advice of every reader of the damaged file, was refused by that very file. A damaged bundle.json beside no such
    Transformer is no export's to judge: refused, named for its user to remove."""
    manifest = output / MANIFEST
    if not manifest.is_file() or json_object(manifest) is not None:
        return False
    index = output / TRANSFORMER / INDEX
    metadata = ((json_object(index) if index.is_file() else None) or {}).get("metadata")
    if isinstance(metadata, dict) and metadata.get("kind") == "transformer":
        return True
    raise BundleError(f"{manifest}: garbled (no JSON object), and {output} holds no Transformer an export wrote "
                      f"({TRANSFORMER}/), so the export will not take it for a model folder; remove {manifest}, or "
                      "give another path")


def _weights_alone(run: Path, output: Path) -> str:
    """How a dVAE or CLIP run, which has no model folder (its tokenizer, dVAE and CLIP are a Transformer's), is
    exported: its weights alone, as a folder or as one file."""
    from megadalle.config.override import override_word

    given = f"megadalle export {override_word('run', run)}"
    return (f"export its weights alone: `{given} {override_word('output', output)} weights_only=true`, or as one file: "
            f"`{given} output=FILE.safetensors`")


def write_bundle(run: str | Path, output: str | Path, tokenizer: str | None = None, dvae_weights: str | None = None,
                 clip_weights: str | None = None, checkpoint: str | None = None, ema: bool | None = None,
                 clip_model: str = "megadalle", dtype: str = "bf16", max_shard_bytes: int = 5 * 10**9,
                 trained: tuple | None = None) -> Path:
    """Export a Transformer run with its tokenizer, dVAE and (optional) CLIP into the folder `output`;
    `clip_model=open_clip:<arch>` takes an open_clip state dict as the CLIP. `ema`: the run's EMA, its live
    weights, or None for its EMA where it trained one (train.consolidate.chosen_ema); bundle.json records which.
    `trained`: the run's task and config (consolidate.run_task), where the caller (the export verb) has them; else
    built here once, for the kind check and the Transformer's export both."""
    from megadalle.data.digest import sha256
    from megadalle.sampling.rerank import OPEN_CLIP

    from megadalle.sampling.compatible import check_files
    from megadalle.sampling.load import check_run_kind
    from megadalle.train.consolidate import chosen_ema, run_task

    run, output = Path(run), Path(output)
    record = run_pieces.read(run)  # a folder that is no run is refused by name here, before the task is built
    config = record.get("config", {})
    trained = trained or run_task(run)
    spec = trained[0].export_spec()
    check_run_kind(run, spec, "transformer", _weights_alone(run, output))  # a model folder is a Transformer's
    check_output(output, spec.kind, run)
    ema = chosen_ema(run, config, ema)
    files = bundle_files(run, record, tokenizer, dvae_weights, clip_weights)
    own_clip = files["clip"] is not None and not clip_model.startswith(OPEN_CLIP)
    codes = recorded_codes(run, None, record)
    warnings = check_files(run, files["dvae"], files["clip"] if own_clip else None, files["tokenizer"],
                           recorded_tokenizer(run, None, record), spec.config)
    _check_pieces(files, own_clip, clip_model, codes)
    created = not output.exists()
    # Held to the manifest: two exports into one folder mixed their pieces (one's bundle.json over the other's
    # Transformer), each saying it wrote the folder. The lock file goes while still held, whatever the end (as
    # outputs.output_folder's does): a model folder is copied and uploaded as it stands, and it would go with it.
    with output_lock(output, "export"):
        try:
            check_output(output, spec.kind, run)  # again, as it is now that no other export writes it
            _write_pieces(run, output, files, created, own_clip, clip_model, checkpoint, ema, dtype,
                          max_shard_bytes, trained)
            checkpoint_read = exported_checkpoint(output / TRANSFORMER)
            # The run resolved, not as typed: its readers (sampling.files.recorded_run) are anywhere, not here.
            manifest = {"format": FORMAT, "transformer": TRANSFORMER, "tokenizer": TOKENIZER, "dvae": DVAE,
                        "clip": CLIP if files["clip"] is not None else None, "clip_model": clip_model, "ema": ema,
                        "sources": {"run": str(run.resolve()),
                                    "checkpoint": checkpoint_read,
                                    **{k: None if v is None else str(v) for k, v in files.items()}},
                        "sha256": {"tokenizer": sha256(output / TOKENIZER)},
                        BUNDLE_KEY: None if codes is None else codes.digest, "run_config": config,
                        EXPORT_KEY: export_record(run, files, checkpoint_read, ema, dtype, max_shard_bytes,
                                                  clip_model)}
            atomic.write_json(output / MANIFEST, manifest)
        finally:
            (output / LOCK).unlink(missing_ok=True)
    say_all(warnings)  # once nothing can refuse the export any more
    return output


def bundle_files(run: Path, record: dict, tokenizer: str | None, dvae_weights: str | None,
                 clip_weights: str | None) -> dict[str, Path | None]:
    """The tokenizer, dVAE and CLIP (None: none) an export of `run`, whose run.json is `record`, puts beside its
    Transformer: those given, else those the run records (`run_pieces.pick`)."""
    return {"tokenizer": run_pieces.pick(tokenizer, run, record, "tokenizer", True),
            "dvae": run_pieces.pick(dvae_weights, run, record, "dvae", True),
            "clip": run_pieces.pick(clip_weights, run, record, "clip", False)}


def _write_pieces(run: Path, output: Path, files: dict, created: bool, own_clip: bool, clip_model: str,
                  checkpoint: str | None, ema: bool, dtype: str, max_shard_bytes: int, trained: tuple) -> None:
    """`write_bundle`'s Transformer and copies into the model folder `output`, which it holds; all but bundle.json.
    An earlier export stands whole until the new Transformer is complete (a refused checkpoint or EMA, a failed read,
    a kill leave it working); from its replacement until the manifest is back (written last), the folder is
    unfinished. A folder this export made (`created`) that holds nothing usable goes, not to be taken for a model."""
    from megadalle.train.consolidate import checkpoint_dir

    damaged = _damaged_manifest(output)
    earlier_clip = (output / CLIP).is_file() if damaged else (
        is_bundle(output) and read_record(output / MANIFEST).get("clip") == CLIP)
    if damaged:  # unfinished from here, as during any re-export: its Transformer's export is no longer refused
        checkpoint_dir(run, checkpoint)  # a checkpoint refused (not the run's, none complete) leaves it as it was
        (output / MANIFEST).unlink()
    try:
        export_transformer(run, output / TRANSFORMER, checkpoint, ema, dtype, max_shard_bytes,
                           lambda: (output / MANIFEST).unlink(missing_ok=True), trained)
        _copy(files["tokenizer"], output / TOKENIZER)
        _copy_weights(files["dvae"], output / DVAE)
        if own_clip:
            _copy_weights(files["clip"], output / CLIP)
        elif files["clip"] is not None:
            _copy_open_clip(files["clip"], output / CLIP)
        elif earlier_clip:  # an export with a CLIP wrote this folder before: its CLIP is not this model's
            _remove_weights(output / CLIP)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
