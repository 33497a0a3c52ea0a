"""The training verbs' checks (train, train-dvae, train-clip): the data, the tokenizer, the sample grids' dVAE,
the backend, the logger and the EMA against the model and DeepSpeed's config, each of which failed only once
DeepSpeed had started, on every rank, when it was wrong. Their run directory is checked in runs.py."""
from __future__ import annotations

import importlib

from omegaconf import DictConfig

from megadalle.preflight.image_size import fits_image_size
from megadalle.preflight.probes import (PreflightError, exists, export_target, fits, image_shards, token_shards,
                                        tokenizer_vocab, warn)
from megadalle.preflight.token_grid import fits_token_grid
from megadalle.preflight.validation import check_image_validation, check_token_validation
from megadalle.warn import WARNING


def check_train(cfg: DictConfig) -> None:
    """Token shards against the Transformer: grid side, image vocabulary; the tokenizer against text_vocab."""
    from megadalle.config import build, top_level
    from megadalle.config.data import DataConfig
    from megadalle.config.model import TransformerConfig
    from megadalle.config.train import DeepSpeedConfig
    from megadalle.config.train_verbs import TrainConfig
    from megadalle.plan.layout import check_stages_filled
    from megadalle.preflight.codes_dvae import check_codes_dvae
    from megadalle.train.distributed import ranks

    build(TrainConfig, top_level(cfg, TrainConfig), "")
    build(DataConfig, cfg.data, "data")  # before the run directory's config (an invalid value was named "another")
    model = build(TransformerConfig, cfg.model, "model")
    world = ranks()[1]
    check_stages_filled(model, build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"), world, f"the {world} ranks launched")
    fits(model.attention_backend != "triton" or triton_runs_here(),
         "model.attention_backend=triton: this machine has no CUDA GPU, and Triton runs on the CPU only in its "
         "interpreter (TRITON_INTERPRET=1, for tests); use model.attention_backend=auto")
    check_grids(cfg, model)
    synthetic = cfg.data.get("source", "shards") == "synthetic"
    warn_unread_data_keys(cfg.data, tokenized=not synthetic)
    if synthetic:
        check_reads_no_files(cfg.data)
        return  # random tokens at the model's shapes: no shards, no tokenizer to check
    fits(bool(cfg.data.tokenizer), "data.tokenizer=null: `train` needs the sentencepiece model of its captions")
    index = token_shards("data.shards", cfg.data.shards)
    fits_global_batch(cfg, index.total)
    fits_token_grid(cfg.data.shards, cfg.data.shards, index, model)
    check_codes_dvae(cfg, index, check_token_validation(cfg, model, dp_ranks(cfg)))
    vocab = tokenizer_vocab("data.tokenizer", cfg.data.tokenizer)
    fits(vocab <= model.text_vocab, f"model.text_vocab={model.text_vocab}: the tokenizer {cfg.data.tokenizer} has "
                                    f"{vocab} pieces (set model.text_vocab={vocab} or more)")
    fits_pad("model", model.text_pad_id)


SYNTHETIC_IGNORES = ("shards", "tokenizer", "val_shards")
"""The `data` keys naming files, which synthetic data never reads."""


def warn_unread_data_keys(data: DictConfig, tokenized: bool) -> None:
    """`data` keys set where nothing reads them, said once (they changed nothing, without a word): BPE dropout where
    no caption is tokenized with it (`tokenized`: `train` on token shards), a shuffle window without shuffling."""
    dropout = float(data.get("bpe_dropout") or 0)
    if dropout and not tokenized:
        warn(f"{WARNING} data.bpe_dropout={dropout} does nothing here: only `train` on token shards "
             "tokenizes captions with BPE dropout")
    if data.get("shuffle_window") is not None and data.get("shuffle") is False:
        warn(f"{WARNING} data.shuffle_window={data.get('shuffle_window')} does nothing with "
             "data.shuffle=false")


def check_reads_no_files(data: DictConfig) -> None:
    """Synthetic `data` given files to read: `data.shards` or `data.tokenizer` trained on random tokens without a
    word, as if on the user's data, and `data.val_shards` crashed the first validation, after training (its loader
    refused synthetic data with a message naming `megadalle train` itself). Here, not in DataConfig.validate: a run
    recorded with them before this check is rebuilt from its run.json by `export`, which validates the config."""
    given = [f"data.{key}={data.get(key)}" for key in SYNTHETIC_IGNORES if data.get(key)]
    fits(not given, f"{' '.join(given)}: data=synthetic trains on random tokens and reads no files; drop "
                    f"{'them' if len(given) > 1 else 'it'}, or train on token shards with data=tokens (the default)")


def check_grids(cfg: DictConfig, model) -> None:
    """The sample grids' dVAE against the Transformer `model` (TransformerConfig), from its config alone, and their
    captions. Without `dvae_weights`, `trainer.media_every` drew nothing and said nothing; a dVAE of another grid or a
    smaller codebook passed, then failed at the first grid, `media_every` updates into the run, as did shards without
    a caption to draw. A train-dvae run directory is checked as the grids read it: the file it exported."""
    from megadalle.errors import UserError
    from megadalle.sampling.compatible import mismatches
    from megadalle.sampling.load import model_config

    every, weights = int(cfg.trainer.get("media_every", 0)), cfg.get("dvae_weights")
    fits(not every or bool(weights), f"trainer.media_every={every}: the sample grids need the dVAE that decodes "
                                     "them; give dvae_weights=DVAE, or set trainer.media_every=0")
    if not weights or cfg.data.get("source") == "synthetic":  # synthetic data has no captions: refused by name later
        return
    exists("dvae_weights", weights)
    decoder = grids_dvae_file(weights)
    try:
        problems = mismatches(model, model_config(decoder, "dvae"))
    except UserError as err:
        raise PreflightError(f"dvae_weights={weights}: {str(err).splitlines()[0]}") from None
    fits(not problems, f"dvae_weights={weights}: cannot decode this model's sample grids: {'; '.join(problems)} "
                       "(give the dVAE the token shards were encoded with)")
    if every:
        check_grid_captions(cfg, weights)
    else:
        warn_no_grids(weights)


def grids_dvae_file(weights: str):
    """The file the grids decode with (encode.dvae_weights_file); its refusals already name dvae_weights."""
    from megadalle.encode import dvae_weights_file
    from megadalle.train.dvae_export import DVAEWeightsError

    try:
        return dvae_weights_file(weights)
    except DVAEWeightsError as err:
        raise PreflightError(str(err)) from None


def warn_no_grids(weights: str) -> None:
    """dvae_weights draws no grid with media_every=0, its default: a user who asked for grids got none and no word.
    Not a warning: the run records the dVAE for export and generate (README's own recipe gives it for that)."""
    warn(f"[train] dvae_weights={weights} draws no sample grid with trainer.media_every=0 (trainer.media_every=N "
         "draws one every N updates); the run records it for export and generate")


def check_grid_captions(cfg: DictConfig, weights: str) -> None:
    """The captions the grids draw (sample_grid.grid_captions), read as the grids read them; a run whose validation
    split has none takes data.shards', and says so."""
    from megadalle.config import build
    from megadalle.config.data import DataConfig
    from megadalle.train.sample_grid import NoGridCaptions, caption_sources, grid_captions

    sources = caption_sources(build(DataConfig, cfg.data, "data"))
    for key, shards in sources:
        token_shards(key, shards)
    try:
        chosen = grid_captions(sources, 1, weights)[0]
    except NoGridCaptions as err:
        raise PreflightError(str(err)) from None
    if chosen != sources[0]:
        warn(f"[train] the sample grids draw the captions of {'='.join(chosen)}: no sample of "
             f"{'='.join(sources[0])} has one")


def fits_global_batch(cfg: DictConfig, samples: int, contrastive: bool = False) -> None:
    """The global batch against the `samples` of data.shards (order.check_global_batch), before DeepSpeed starts."""
    from megadalle.config import build
    from megadalle.config.train import TrainerConfig
    from megadalle.data.order import check_global_batch

    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    check_global_batch(trainer.micro_batch, trainer.grad_accum, dp_ranks(cfg), samples, cfg.data.shards, contrastive)


def dp_ranks(cfg: DictConfig) -> int:
    """The data-parallel ranks of the run: those launched here, less a pipeline's stages."""
    from megadalle.config import build
    from megadalle.config.train import DeepSpeedConfig
    from megadalle.train.distributed import ranks

    return max(1, ranks()[1] // build(DeepSpeedConfig, cfg.deepspeed, "deepspeed").pipeline_stages)


def fits_contrastive_batch(cfg: DictConfig, negatives: str, validates: bool) -> None:
    """CLIP contrasts each pair with the other pairs of its micro-batch on every rank (with clip.negatives=update,
    of the whole update): with one pair there is no other caption to tell its image from, so the loss is 0 and
    nothing is learnt (clip_acc 1.0, grad_norm 0, every update). A run that `validates` contrasts as many pairs in
    each validation loss (train/validate.py), or fewer where its split holds less than one global batch and is read
    in fewer micro-batches (data/val_pass.py): a split of one sample read alone is a val/loss of 0 whatever the
    weights."""
    from megadalle.config import build
    from megadalle.config.train import TrainerConfig

    trainer, ranks = build(TrainerConfig, cfg.trainer, "trainer"), dp_ranks(cfg)
    keys = f"trainer.micro_batch={trainer.micro_batch} x {ranks} data-parallel rank{'s' if ranks != 1 else ''}"
    update = negatives == "update" and trainer.grad_accum > 1
    pairs = trainer.micro_batch * ranks * (trainer.grad_accum if update else 1)
    way_out = " or trainer.grad_accum" if negatives == "update" else \
        " or set clip.negatives=update" if trainer.grad_accum > 1 else ""
    fits(pairs >= 2, f"{keys} = {pairs} pair per contrastive loss (clip.negatives={negatives}): with no other caption "
                     f"to tell its image from, CLIP learns nothing (loss 0); raise trainer.micro_batch{way_out}")
    if validates:
        fits_contrastive_validation(cfg, trainer, ranks, update)


def fits_contrastive_validation(cfg: DictConfig, trainer, ranks: int, update: bool) -> None:
    """The pairs of each validation loss of a CLIP run (`trainer`, TrainerConfig, on `ranks` data-parallel ranks),
    its split read as the Validator reads it (data/val_pass.py `one_pass`): the training's under `update` (the
    whole-update contrast), fewer where the split holds less than a global batch."""
    from megadalle.config import build
    from megadalle.config.data import DataConfig
    from megadalle.data.val_pass import one_pass

    shards = build(DataConfig, cfg.data, "data").validation_shards()
    total = image_shards("data.val_shards", shards).total
    accum = trainer.grad_accum if update else 1
    pairs = trainer.micro_batch * ranks * one_pass(trainer.micro_batch, accum, ranks, trainer.eval_batches, total,
                                                   shards, contrastive=True).grad_accum
    fits(pairs >= 2, f"trainer.eval_every={trainer.eval_every}: the validation split {shards} holds {total} "
                     f"sample{'s' if total != 1 else ''}, read as {pairs} pair per validation loss: its val/loss would "
                     "be 0 whatever the weights; give data.val_shards of at least 2 samples or set "
                     "trainer.eval_every=0")


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


def fits_unpipelined(cfg: DictConfig, verb: str) -> None:
    """The dVAE and CLIP are not built in pipeline stages (only the Transformer is: train/pipeline.py). A stage count
    set on another layout (`deepspeed.pipeline_stages=2`; `deepspeed=pipe` is refused as an option) was refused only
    once DeepSpeed started, after the engine had first asked for a multiple of the stages in ranks. (Which verbs are
    unpipelined is config/verbs.py's UNPIPELINED, held to each task's `runs_pipelined` by
    tests/cli/test_unpipelined_verbs.py.)"""
    from megadalle.config.verbs import GROUP_OPTIONS

    stages = int(cfg.deepspeed.get("pipeline_stages", 1))
    layouts = " or ".join(f"deepspeed={o}" for o in GROUP_OPTIONS[verb]["deepspeed"])
    fits(stages == 1, f"deepspeed.pipeline_stages={stages}: {verb} cannot run pipelined (deepspeed=pipe is train's: "
                      f"only the Transformer is built in stages); use {layouts} with deepspeed.pipeline_stages=1")


def check_train_dvae(cfg: DictConfig) -> None:
    from megadalle.config import build, top_level
    from megadalle.config.dvae import DVAEConfig, TrainDVAEConfig

    fits_unpipelined(cfg, "train-dvae")
    warn_unread_data_keys(cfg.data, tokenized=False)
    export_target(build(TrainDVAEConfig, top_level(cfg, TrainDVAEConfig), "").weights, "dvae")
    dvae = build(DVAEConfig, cfg.dvae, "dvae")
    revive = dvae.objective.revive_every
    fits(not (revive and int(cfg.deepspeed.zero_stage) >= 3),
         f"dvae.objective.revive_every={revive}: reviving codes rewrites parameters between updates, which needs "
         f"deepspeed.zero_stage <= 2 (it is {cfg.deepspeed.zero_stage}); or set dvae.objective.revive_every=0")
    index = image_shards("data.shards", cfg.data.shards, captions=False)  # the dVAE learns from the pixels alone
    fits_global_batch(cfg, index.total)
    fits_image_size(index, cfg, "dvae.image_size", dvae.image_size)
    check_image_validation(cfg, "dvae.image_size", dvae.image_size, dp_ranks(cfg), captions=False)


def validates(cfg: DictConfig) -> bool:
    """Whether the run validates: trainer.eval_every > 0 and a split to read (preflight/validation.py's)."""
    from megadalle.config import build
    from megadalle.config.data import DataConfig
    from megadalle.config.train import TrainerConfig

    every = build(TrainerConfig, cfg.trainer, "trainer").eval_every
    return bool(every) and build(DataConfig, cfg.data, "data").validation_shards() is not None


def check_train_clip(cfg: DictConfig) -> None:
    """CLIP's contrastive checks come before the split's general ones (check_image_validation): a split too small for
    a micro-batch is refused with the ways out that give 2 pairs (data/val_pass.py), where the general refusal advised
    a lower trainer.micro_batch that a 1-sample split then refused as a val/loss of 0."""
    from megadalle.config import build, top_level
    from megadalle.config.clip import ClipConfig
    from megadalle.config.train_verbs import TrainClipConfig

    fits_unpipelined(cfg, "train-clip")
    warn_unread_data_keys(cfg.data, tokenized=False)
    export_target(build(TrainClipConfig, top_level(cfg, TrainClipConfig), "").weights, "clip")
    clip = build(ClipConfig, cfg.clip, "clip")
    index = image_shards("data.shards", cfg.data.shards)
    fits_global_batch(cfg, index.total, contrastive=True)
    fits_image_size(index, cfg, "clip.image_size", clip.image_size)
    fits_contrastive_batch(cfg, clip.negatives, validates(cfg))
    check_image_validation(cfg, "clip.image_size", clip.image_size, dp_ranks(cfg))
    vocab = tokenizer_vocab("tokenizer", cfg.tokenizer)
    fits(vocab <= clip.text_vocab, f"clip.text_vocab={clip.text_vocab}: the tokenizer {cfg.tokenizer} has "
                                   f"{vocab} pieces (set clip.text_vocab={vocab} or more)")
    fits_pad("clip", clip.text_pad_id)


def check_precision(cfg: DictConfig) -> None:
    """A bf16 run's DeepSpeed layout (config.train.check_bf16_layout), here where the precision is known: the engine
    refused it only once every rank had started its process group."""
    import torch

    from megadalle.config import build
    from megadalle.config.train import DeepSpeedConfig, check_bf16_layout
    from megadalle.train.engine import training_dtype

    if training_dtype(cfg.trainer.get("precision", "auto")) == torch.bfloat16:
        check_bf16_layout(build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"))


def check_logger(cfg: DictConfig) -> None:
    """wandb must import, and online it needs credentials where it logs, on rank 0; without either, wandb.init failed
    after DeepSpeed had started. Checked on rank 0 only: a rank that does not log needs none, and a launcher ends the
    other ranks when rank 0 exits."""
    from megadalle.train.distributed import detect
    from megadalle.train.wandb_log import credentials_found, import_failure

    mode = cfg.logger.get("mode")
    if mode != "disabled" and detect().rank == 0:  # else after DeepSpeed started, and rank 1 waited on rank 0's word
        try:
            importlib.import_module("wandb")
        except Exception as err:
            fits(False, import_failure(mode, err))
    if mode == "online" and detect().rank == 0:
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
