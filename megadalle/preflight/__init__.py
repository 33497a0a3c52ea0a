"""Checks a verb's config before anything starts (no process group, no DeepSpeed, no worker).

A wrong path or shards that do not fit the model used to surface after DeepSpeed had started, as a
traceback on every rank (or worse, as an index error deep in an embedding). Here every such mistake
is a PreflightError naming the key, the value and what was expected; the CLI prints it once (rank 0)
and exits with code 2. The checks read only small files: index.json, a weights' config JSON and the
tokenizer model; and they make nothing but an empty probe folder, removed at once, where an output or a run
directory will go (`can_make`). One exception: a directory of tars written elsewhere, with no index.json, is
indexed here (`ingest.open_index`, as every reader would on first use), since its index is what
the checks read.

Shard directories record what wrote them in index.json's `meta`: `prepare` the image size, `encode`
the code grid side (`grid_size`), the codebook size (`vocab_size`) and the image size it encoded.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from megadalle.config.required import check_required
from megadalle.data.fields import IMAGE_FIELDS
from megadalle.errors import UserError

CODES_FIELD = "codes.npy"


class PreflightError(UserError):
    """A path or a data set that cannot work with the config; the message names the key and the value."""


def _exists(key: str, value, kind: str = "path") -> Path:
    path = Path(str(value))
    ok = path.is_dir() if kind == "directory" else path.is_file() if kind == "file" else path.exists()
    if not ok and kind == "directory" and path.is_file():
        raise PreflightError(f"{key}={value}: a file, not a folder of shards; give its folder: {key}={path.parent}")
    if not ok:
        raise PreflightError(f"{key}={value}: no such {kind}")
    return path


def writable(key: str, value, kind: str, example: str = "") -> None:
    """`value` can be written as a `kind` ("file" or "folder"): nothing of the other kind stands there, no file
    where one of its folders must be, and the folder it would go in can be written. A verb that finds out only
    when it writes has already done its work (trained a tokenizer, read a dataset); `example` names a file to
    suggest."""
    path = Path(str(value))
    if kind == "file" and path.is_dir():
        raise PreflightError(f"{key}={value}: a folder; give the file to write ({key}={path / example})")
    can_make(f"{key}={value}", path, kind)


def can_make(subject: str, path: Path, kind: str) -> None:
    """A PreflightError naming `subject` unless a `kind` can be written at `path` (a folder may exist already).
    Whether its nearest existing folder takes a new entry is learnt by making one there and removing it at once:
    permission bits cannot tell, since root passes them all and /proc or a read-only mount still refuses."""
    if kind == "folder" and path.exists() and not path.is_dir():
        raise PreflightError(f"{subject}: a file; give a folder")
    absolute = path.absolute()
    nearest = next(p for p in (absolute, *absolute.parents) if p.exists())
    if nearest != absolute and not nearest.is_dir():
        raise PreflightError(f"{subject}: {nearest} is a file, not a folder")
    folder = nearest if nearest.is_dir() else nearest.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".megadalle-probe-", dir=folder))
    except OSError as err:
        raise PreflightError(f"{subject}: nothing can be made in {folder} ({err.strerror}); give a place you can "
                             "write") from None


def shard_index(key: str, value):
    """The ShardIndex of the directory `value` (tars from elsewhere indexed now, as the README promises),
    or a PreflightError naming `key`."""
    from megadalle.data.ingest import open_index

    _exists(key, value, "directory")
    try:
        return open_index(value)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise PreflightError(f"{key}={value}: {str(err).splitlines()[0]}") from None


def image_shards(key: str, value):
    index = shard_index(key, value)
    if not any(f in index.fields for f in IMAGE_FIELDS):
        hint = " (token shards from `encode`; this verb reads image shards from `prepare`)" \
            if CODES_FIELD in index.fields else ""
        raise PreflightError(f"{key}={value}: no image field among {index.fields}{hint}")
    return index


def token_shards(key: str, value):
    index = shard_index(key, value)
    if CODES_FIELD not in index.fields:
        raise PreflightError(f"{key}={value}: no {CODES_FIELD} field among {index.fields}: `train` reads token "
                             "shards written by `megadalle encode`, not image shards")
    return index


def first_codes_side(shards) -> int | None:
    """The code grid's side in the first sample of token shards that do not record it (one sample read)."""
    from itertools import islice

    from megadalle.data.reader import iter_samples

    codes = [s[CODES_FIELD] for s in islice(iter_samples(shards, [CODES_FIELD]), 1)]
    return int(codes[0].shape[0]) if codes and codes[0].ndim == 2 else None


def tokenizer_vocab(key: str, value) -> int:
    """Vocabulary size of the sentencepiece model at `value`."""
    from megadalle.data.tokenizer import Tokenizer, TokenizerError

    _exists(key, value, "file")
    try:
        return Tokenizer(value).vocab_size
    except TokenizerError as err:
        raise PreflightError(f"{key}={value}: {err}") from None


def fits(ok: bool, message: str) -> None:
    if not ok:
        raise PreflightError(message)


def check_train(cfg: DictConfig) -> None:
    """Token shards against the Transformer: grid side, image vocabulary; the tokenizer against text_vocab."""
    from megadalle.config import build, top_level
    from megadalle.config.model import TransformerConfig
    from megadalle.config.train import DeepSpeedConfig
    from megadalle.config.train_verbs import TrainConfig
    from megadalle.plan.layout import check_stages_filled
    from megadalle.train.distributed import ranks

    build(TrainConfig, top_level(cfg, TrainConfig), "")
    model = build(TransformerConfig, cfg.model, "model")
    world = ranks()[1]
    check_stages_filled(model, build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"), world, f"the {world} ranks launched")
    fits(model.attention_backend != "triton" or triton_runs_here(),
         "model.attention_backend=triton: this machine has no CUDA GPU, and Triton runs on the CPU only in its "
         "interpreter (TRITON_INTERPRET=1, for tests); use model.attention_backend=auto")
    check_grids(cfg, model)
    if cfg.data.get("source", "shards") == "synthetic":
        return  # random tokens at the model's shapes: no shards, no tokenizer to check
    fits(bool(cfg.data.tokenizer), "data.tokenizer=null: `train` needs the sentencepiece model of its captions")
    index = token_shards("data.shards", cfg.data.shards)
    meta = dict(index.meta)
    side = first_codes_side(cfg.data.shards) if "grid_size" not in meta else None
    if side is not None:  # token shards written elsewhere record no grid: their first sample shows it
        meta["grid_size"] = side
    if "grid_size" in meta:
        fits(int(meta["grid_size"]) == model.grid_size,
             f"model.grid_size={model.grid_size}: the token shards {cfg.data.shards} hold {meta['grid_size']}x"
             f"{meta['grid_size']} code grids (set model.grid_size={meta['grid_size']})")
    if "vocab_size" in meta:
        fits(int(meta["vocab_size"]) == model.image_vocab,  # larger: `generate` refuses the model with its dVAE
             f"model.image_vocab={model.image_vocab}: the token shards {cfg.data.shards} hold codes of a "
             f"{meta['vocab_size']}-entry codebook, and sampling needs the model's codes to be its dVAE's "
             f"(set model.image_vocab={meta['vocab_size']})")
    vocab = tokenizer_vocab("data.tokenizer", cfg.data.tokenizer)
    fits(vocab <= model.text_vocab, f"model.text_vocab={model.text_vocab}: the tokenizer {cfg.data.tokenizer} has "
                                    f"{vocab} pieces (set model.text_vocab={vocab} or more)")
    fits_pad("model", model.text_pad_id)


def check_grids(cfg: DictConfig, model) -> None:
    """The sample grids' dVAE against the Transformer `model` (TransformerConfig), from its config alone. Without
    `dvae_weights`, `trainer.media_every` drew nothing and said nothing; a dVAE of another grid or a smaller
    codebook passed, then failed at the first grid, `media_every` updates into the run."""
    from megadalle.errors import UserError
    from megadalle.sampling.compatible import mismatches
    from megadalle.sampling.load import model_config

    every, weights = int(cfg.trainer.get("media_every", 0)), cfg.get("dvae_weights")
    fits(not every or bool(weights), f"trainer.media_every={every}: the sample grids need the dVAE that decodes "
                                     "them; give dvae_weights=DVAE, or set trainer.media_every=0")
    if not weights or cfg.data.get("source") == "synthetic":  # synthetic data has no captions: refused by name later
        return
    _exists("dvae_weights", weights)
    try:
        problems = mismatches(model, model_config(weights, "dvae"))
    except UserError as err:
        raise PreflightError(f"dvae_weights={weights}: {str(err).splitlines()[0]}") from None
    fits(not problems, f"dvae_weights={weights}: cannot decode this model's sample grids: {'; '.join(problems)} "
                       "(give the dVAE the token shards were encoded with)")


def fits_pad(group: str, pad_id: int) -> None:
    """The tokenizer pads captions with its own pad id; a model that takes another id for padding would score
    the real pads as text and embed them as a word (and treat that id, e.g. the end of a caption, as a pad)."""
    from megadalle.data.tokenizer import PAD_ID

    fits(pad_id == PAD_ID, f"{group}.text_pad_id={pad_id}: megadalle's tokenizer pads with id {PAD_ID} "
                           f"(set {group}.text_pad_id={PAD_ID})")


def triton_runs_here() -> bool:
    import os

    import torch

    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def _image_size(index, cfg: DictConfig, key: str, wanted: int) -> None:
    """The loaders resize every image to the model's side: data.image_size may only repeat it, and
    shards stored smaller than the model's input would be upscaled (a wrong directory, or a wrong model)."""
    fits(cfg.data.get("image_size") in (None, wanted), f"data.image_size={cfg.data.image_size}: must be null or "
                                                       f"{key}={wanted} (the model's input)")
    _not_upscaled(index, f"data.shards={cfg.data.shards}", wanted, f"{key}={wanted}",
                  f"set {key}={index.meta.get('image_size')} or smaller")


def _not_upscaled(index, shards: str, wanted: int, subject: str, remedy: str) -> None:
    """Images stored smaller than the model's input side `wanted` would be upscaled: refused, naming `subject`."""
    stored = index.meta.get("image_size")
    fits(stored is None or int(stored) >= wanted,
         f"{subject}: the images of {shards} are {stored} px, smaller than the model's input ({remedy}, or prepare "
         f"the shards at {wanted} px)")


def export_target(value: str | None) -> None:
    """Where train-dvae or train-clip exports the trained model (`weights`), checked as `export` checks its
    output: the export comes after the whole training, and a path it cannot write failed only then."""
    from megadalle.weights import AmbiguousOutput, OutputInTheWay, check_replaceable, one_file

    if value is None:
        return
    try:
        check_replaceable(value)
    except (OutputInTheWay, AmbiguousOutput) as err:
        why = str(err).removeprefix(f"output={value}: ").removeprefix(f"output={Path(value)}: ")
        raise PreflightError(f"weights={value}: {why}") from None
    writable("weights", value, "file" if one_file(value) else "folder")


def check_train_dvae(cfg: DictConfig) -> None:
    from megadalle.config import build, top_level
    from megadalle.config.dvae import DVAEConfig, TrainDVAEConfig

    export_target(build(TrainDVAEConfig, top_level(cfg, TrainDVAEConfig), "").weights)
    dvae = build(DVAEConfig, cfg.dvae, "dvae")
    revive = dvae.objective.revive_every
    fits(not (revive and int(cfg.deepspeed.zero_stage) >= 3),
         f"dvae.objective.revive_every={revive}: reviving codes rewrites parameters between updates, which needs "
         f"deepspeed.zero_stage <= 2 (it is {cfg.deepspeed.zero_stage}); or set dvae.objective.revive_every=0")
    _image_size(image_shards("data.shards", cfg.data.shards), cfg, "dvae.image_size", dvae.image_size)


def check_train_clip(cfg: DictConfig) -> None:
    from megadalle.config import build, top_level
    from megadalle.config.clip import ClipConfig
    from megadalle.config.train_verbs import TrainClipConfig

    export_target(build(TrainClipConfig, top_level(cfg, TrainClipConfig), "").weights)
    clip = build(ClipConfig, cfg.clip, "clip")
    _image_size(image_shards("data.shards", cfg.data.shards), cfg, "clip.image_size", clip.image_size)
    vocab = tokenizer_vocab("tokenizer", cfg.tokenizer)
    fits(vocab <= clip.text_vocab, f"clip.text_vocab={clip.text_vocab}: the tokenizer {cfg.tokenizer} has "
                                   f"{vocab} pieces (set clip.text_vocab={vocab} or more)")
    fits_pad("clip", clip.text_pad_id)


RUN_TASKS = {"train": "transformer", "train-dvae": "dvae", "train-clip": "clip"}
"""Training verbs and their task's name (the default run directory is <out_dir>/<task>/<name>)."""


def check_logger(cfg: DictConfig) -> None:
    """wandb online needs credentials where it logs, on rank 0; without them wandb.init raised a UsageError after
    DeepSpeed had started. Checked on rank 0 only: a rank that does not log needs none, and a launcher ends the
    other ranks when rank 0 exits."""
    from megadalle.train.distributed import detect
    from megadalle.train.wandb_log import credentials_found

    if cfg.logger.get("mode") == "online" and detect().rank == 0:
        fits(credentials_found(), "logger.mode=online: wandb finds no credentials here (WANDB_API_KEY, or the ~/.netrc "
                                  "entry `wandb login` writes); run `wandb login`, or log with logger.mode=offline and "
                                  "upload later with `wandb sync`")


def check_ema_swap(cfg: DictConfig) -> None:
    """Validation and media swap the EMA into the model's partitions (train/ema_swap.py); ZeRO++'s hierarchical
    partitioning (zero_hpz_partition_size) gathers from a secondary copy of them that the swap does not write, so
    val/ and the grids would be of the live weights while claiming to be of the EMA."""
    trainer = cfg.trainer
    hpz = ((cfg.deepspeed.get("extra") or {}).get("zero_optimization") or {}).get("zero_hpz_partition_size", 1)
    fits(trainer.get("ema") is None or not (trainer.get("eval_every") or trainer.get("media_every")) or int(hpz) <= 1,
         f"deepspeed.extra.zero_optimization.zero_hpz_partition_size={hpz}: with trainer.ema={trainer.ema} validation "
         "and media swap the EMA into ZeRO-3's partitions, not into ZeRO++'s secondary copies it gathers from; drop "
         "zero_hpz_partition_size, or set trainer.eval_every=0 trainer.media_every=0")


def check_run_dir(verb: str, cfg: DictConfig) -> None:
    """The run directory: its `name` one folder, the folder one that can be made or written (rank 0 makes it once
    DeepSpeed has started: a file or an unwritable place in its path was a traceback there), and a rerun into an
    existing one must have its config (megadalle.train.rundir.RESUMABLE aside)."""
    from omegaconf import OmegaConf

    from megadalle.train import rundir

    given, out_dir, name = cfg.get("run_dir"), str(cfg.get("out_dir", "outputs")), cfg.get("name")
    task = RUN_TASKS[verb]
    check_name(name, out_dir, task)
    path = rundir.path_for(given, out_dir, task, name)
    can_make(f"run_dir={given}" if given else f"out_dir={out_dir} (the run directory {path})", path, "folder")
    rundir.check_config(path, OmegaConf.to_container(cfg, resolve=True))


def check_run_keys(cfg: DictConfig) -> None:
    """The training verbs' shared keys typed (config.train.RunConfig): `seed=abc` was an int() traceback inside
    train and train-clip once every other check had passed."""
    from megadalle.config import build, top_level
    from megadalle.config.train import RunConfig

    build(RunConfig, top_level(cfg, RunConfig), "")


def check_name(name, out_dir: str, task: str) -> None:
    """A run's `name` is one folder under <out_dir>/<task>: `../x` put the run outside out_dir, `a/b` nested it
    where no other run looks. A directory anywhere else is `run_dir`'s to give."""
    text = str(name or "")
    fits(not text or (Path(text).name == text and text not in (".", "..")),
         f"name={name}: a run's name is one folder under {out_dir}/{task} (no `/`, not `.` or `..`); give "
         "name=<plain name>, or run_dir=<any path> for a directory elsewhere")


def check_encode(cfg: DictConfig) -> None:
    """The weights exist (a run directory stands for its export) and the images are not smaller than the dVAE's
    input, as train-dvae checks: the size is read from the weights' config JSON, not the weights."""
    from megadalle.encode import dvae_weights_file
    from megadalle.weights import read_config

    try:
        weights = dvae_weights_file(cfg.dvae_weights)
    except FileNotFoundError as err:
        raise PreflightError(str(err)) from None
    index = image_shards("input", cfg.input)
    writable("output", cfg.output, "folder")
    size = read_config(weights, "dvae").get("image_size")
    if size is not None:
        _not_upscaled(index, f"input={cfg.input}", int(size), f"dvae_weights={cfg.dvae_weights} (a dVAE of {size} px)",
                      "use a dVAE trained at the shards' size or smaller")


def check_tokenizer(cfg: DictConfig) -> None:
    shard_index("input", cfg.input)
    writable("output", cfg.output, "file", "tokenizer.model")


def check_prepare(cfg: DictConfig) -> None:
    _exists("input", cfg.input)


def check_export(cfg: DictConfig) -> None:
    """The run, and a model folder's place (exported weights alone are checked by the export, weights.py)."""
    from megadalle.weights import one_file

    _exists("run", cfg.run, "directory")
    if not cfg.weights_only and not one_file(cfg.output):
        writable("output", cfg.output, "folder")


def check_generate(cfg: DictConfig) -> None:
    _exists("weights", cfg.weights)


def check_evaluate(cfg: DictConfig) -> None:
    """The Transformer's `weights`, named as `generate` names them: a missing path is not the dVAE missing
    beside it. The captions, shards and output are checked by `evaluate` itself (before any model is read),
    so that a call without the CLI gets the same checks."""
    check_generate(cfg)


CHECKS: dict[str, Callable[[DictConfig], None]] = {
    "prepare": check_prepare,
    "tokenizer": check_tokenizer,
    "train-dvae": check_train_dvae,
    "encode": check_encode,
    "train-clip": check_train_clip,
    "train": check_train,
    "export": check_export,
    "generate": check_generate,
    "evaluate": check_evaluate,
}
"""Per-verb checks; a verb without an entry is checked for required keys only."""


def check_out_dir(cfg: DictConfig) -> None:
    """`out_dir` is the folder under which runs and outputs go (`<out_dir>/<task>/<name>`, `${out_dir}/generate`):
    null would be the text `None` there, a folder of that name beside the command."""
    fits(cfg.get("out_dir") is not None, "out_dir=null: the folder runs and outputs go under cannot be null; give one "
                                         "(out_dir=outputs, the default)")


def preflight(verb: str, cfg: DictConfig) -> None:
    """Required keys first (a check below may read them), then where outputs go, then the verb's own checks."""
    check_required(cfg)
    check_out_dir(cfg)
    if verb in RUN_TASKS:
        check_run_keys(cfg)
    check = CHECKS.get(verb)
    if check is not None:
        check(cfg)
    if verb in RUN_TASKS:
        check_ema_swap(cfg)
        check_logger(cfg)
        check_run_dir(verb, cfg)
