"""Where a sampling verb's files are: the Transformer, the dVAE, the tokenizer and the CLIP that its keys name,
that a model folder's bundle.json names, or that a Transformer run's run.json records, found from those records
alone, without reading a tensor. `generate`, `evaluate` and `load_pipeline` resolve them once (`sampling_files`)
and read what was found (megadalle.bundle.open_models), and the sampling verbs' resume key (sampling/resume.py)
states the same files.

A model folder, as `export output=FOLDER` writes it (megadalle.bundle_write):

    FOLDER/
      bundle.json              what is where, and the Transformer run's config (the record of how it was trained),
                               the tokenizer's sha256 and the digest of the dVAE whose codes it learnt
      transformer/             the Transformer: safetensors shards + model.safetensors.index.json + config.json
      tokenizer.model          sentencepiece BPE model
      dvae.safetensors         dVAE (+ dvae.json)
      clip.safetensors         CLIP reranker (+ clip.json); for `clip_model=open_clip:<arch>` the open_clip state
                               dict (the arch is in bundle.json); absent when none was given (no rerank)

The names are the ones `generate` looks for beside its `weights`, so `generate weights=FOLDER` loads it
(run_pieces.py). The tokenizer's sha256 and the codes dVAE's digest that bundle.json or run.json records come with
the files (`SamplingFiles.tokenizer_record`, `codes_record`), for the checks that refuse other ones
(sampling/compatible.py, sampling/dvae_record.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from megadalle import run_pieces
from megadalle.config.override import override_word
from megadalle.errors import BundleError
from megadalle.sampling.compatible import TokenizerRecord
from megadalle.sampling.dvae_record import BUNDLE_KEY, RUN_KEY, CodesRecord
from megadalle.weights import INDEX, MANIFEST, OLD, TMP, read_record, shard_of

FORMAT = "megadalle-bundle/1"
TRANSFORMER, DVAE, CLIP, TOKENIZER = "transformer", "dvae.safetensors", "clip.safetensors", "tokenizer.model"


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def recorded_run(folder: Path) -> Path | None:
    """The training run the model folder `folder` was exported from, as its bundle.json records it (`sources.run`),
    where that is a run; None where it records none, or a run no longer there. The export records it absolute
    (bundle_write.py); a relative record (an export before that) is relative to the folder that export ran in,
    which nothing records: unknown, rather than read from here or from beside the folder, where it could name
    another run, whose record would be written beside this folder's tokenizer and dVAE."""
    from megadalle.sampling.load import is_run
    from megadalle.weights.records import json_object

    manifest = json_object(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    sources = (manifest or {}).get("sources")
    run = sources.get("run") if isinstance(sources, dict) else None
    return Path(run) if isinstance(run, str) and Path(run).is_absolute() and is_run(run) else None


def unfinished(path: str | Path) -> bool:
    """A folder `write_bundle` began and did not finish (killed, or a disk filled): its Transformer or the
    temporary of one (or the earlier one moved aside as it is replaced), without bundle.json (written last)."""
    path = Path(path)
    return (path.is_dir() and not is_bundle(path)
            and ((path / TRANSFORMER).is_dir() or any(path.glob(f"{TRANSFORMER}{TMP}*"))
                 or any(path.glob(f"{TRANSFORMER}{OLD}{TMP}*"))))


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
    want_clip: bool
    """Whether the verb reads a reranker (`rerank`, `clip_score`): an open_clip one is then refused without weights."""
    manifest: dict
    """A model folder's bundle.json; {} for other weights."""
    tokenizer_record: TokenizerRecord | None = None
    """The sha256 that the folder's bundle.json or the run's run.json records of its tokenizer; None for other
    weights and for records older than the digests."""
    codes_record: CodesRecord | None = None
    """The digest that the folder's bundle.json or the run's run.json records of the dVAE whose codes the Transformer
    learnt; None for other weights, older records and token shards that recorded none."""


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
    from megadalle.sampling.load import ModelNotFound, beside, is_run
    from megadalle.sampling.rerank import OPEN_CLIP

    if not Path(weights).exists():  # before any piece is looked for beside it (the verbs' preflight says it first)
        raise ModelNotFound(f"weights={weights}: no weights file, model folder or run directory there")
    weights = folder_of_transformer(Path(weights))
    shards = shard_of(weights)
    if shards is not None:  # one shard is no model: its config and the other shards are its folder's
        folder = folder_of_transformer(shards)
        raise BundleError(f"weights={weights}: one shard of the weights in {folder}; pass "
                          f"{override_word('weights', folder)}")
    if weights.name == MANIFEST and is_bundle(weights.parent):  # read as weights, it was called damaged
        raise BundleError(f"weights={weights}: the record of the model folder {weights.parent}; pass "
                          f"{override_word('weights', weights.parent)}")
    refuse_checkpoint(weights, "weights", dvae)
    if unfinished(weights):
        raise BundleError(f"{weights}: unfinished export (no {MANIFEST}): rerun `megadalle export` with "
                          f"{override_word('output', weights)}")
    manifest = read_record(weights / MANIFEST, "tokenizer", "dvae") if is_bundle(weights) else None
    if manifest is not None and clip_model == "megadalle":  # the key's default: the folder's own reranker wins
        clip_model = manifest.get("clip_model", "megadalle")
    record = run_pieces.read(weights) if manifest is None and is_run(weights) else None
    trained = run_pieces.trained_piece(record) if record is not None else None
    if trained is not None:  # before the pieces beside it are looked for, which such a run has none of
        key = run_pieces.VERB_KEYS[trained]
        raise BundleError(f"weights={weights}: a {run_pieces.MODEL_NAMES[trained]} training run, not a Transformer's; "
                          f"it is read as {override_word(key, weights)} beside the Transformer's weights")

    def piece(given: str | None, key: str, name: str) -> Path | None:
        if given:
            refuse_checkpoint(Path(given), run_pieces.VERB_KEYS[key])
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
                         clip_path, clip_model, want_clip, manifest or {},
                         recorded_tokenizer(weights, manifest, record), recorded_codes(weights, manifest, record))


def refuse_checkpoint(path: Path, key: str, dvae: str | None = None) -> None:
    """Refuse a path inside a training run's checkpoints given as `key`: a DeepSpeed checkpoint is no weights, and its
    run's record rebuilds the model from it. The refusal names the run, which reads its newest checkpoint, and how to
    read the one given (`run_pieces.export_advice`, with `dvae` for a Transformer's model folder)."""
    from megadalle.sampling.load import checkpoint_in_run

    in_run = checkpoint_in_run(path)
    if in_run is None:
        return
    run, step = in_run
    read = "sample" if key == "weights" else "read"
    older = "" if step is None else f", or to {read} {step.name}: {run_pieces.export_advice(run, step, dvae)}"
    raise BundleError(f"{key}={path}: inside the checkpoints of the training run {run}; pass "
                      f"{override_word(key, run)} (it {read}s the newest checkpoint){older}")


def recorded_tokenizer(where: Path, manifest: dict | None, record: dict | None) -> TokenizerRecord | None:
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


def recorded_codes(where: Path, manifest: dict | None, record: dict | None) -> CodesRecord | None:
    """What a model folder's bundle.json (`manifest`) or a run's run.json (`record`) says of the dVAE whose codes its
    Transformer learnt."""
    if manifest is not None:
        digest, name = manifest.get(BUNDLE_KEY), MANIFEST
    elif record is not None:
        digest, name = record.get("sha256", {}).get(RUN_KEY), "run.json"
    else:
        return None
    return CodesRecord(digest, str(where / name)) if isinstance(digest, str) else None
