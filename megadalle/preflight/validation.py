"""The validation split of a training verb that validates (trainer.eval_every > 0), checked as its data.shards are.

It was read only at the first validation, `trainer.eval_every` updates into the run: token shards given to
train-dvae failed there with a traceback (every update since the last checkpoint lost), images smaller than the
model's input were upscaled in silence, a folder of images got no advice; and a split smaller than one micro-batch on
every rank scored samples twice in each batch (data/val_pass.py). Here the same probes and wording as data.shards'.
A split that is data.shards' own folder validated on the training samples without a word: refused by name.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from omegaconf import DictConfig

from megadalle.preflight.image_size import not_upscaled
from megadalle.preflight.probes import fits, image_shards, token_shards
from megadalle.preflight.token_grid import fits_token_grid


def validation_split(cfg: DictConfig, probe: Callable, ranks: int):
    """(folder, index) of the split the run validates on, read by `probe` (image_shards or token_shards) and held
    against the global micro-batch of `ranks` data-parallel ranks; None when the run does not validate or finds no
    split (it says so when it starts)."""
    from megadalle.config import build
    from megadalle.config.data import DataConfig
    from megadalle.config.train import TrainerConfig
    from megadalle.data.val_pass import one_pass

    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    shards = build(DataConfig, cfg.data, "data").validation_shards() if trainer.eval_every else None
    if shards is None:
        return None
    not_training_folder(shards, cfg.data.shards)
    index = probe("data.val_shards", shards)
    one_pass(trainer.micro_batch, trainer.grad_accum, ranks, trainer.eval_batches, index.total, shards)
    return shards, index


def not_training_folder(val_shards: str, shards: str) -> None:
    """data.val_shards naming data.shards' folder (itself, through a link, or another spelling of its path) scores
    the samples the run trains on: a val/loss that tracks the training loss, whatever the model generalises."""
    from megadalle.train import rundir

    fits(not rundir.same_path(val_shards, shards),
         f"data.val_shards={val_shards} is the folder of data.shards={shards}: validation would score the samples "
         "the run trains on; give held-out shards (prepare's <shards>/val, read by default with data.val_shards=null)")


def check_image_validation(cfg: DictConfig, key: str, wanted: int, ranks: int, captions: bool = True) -> bool:
    """Image shards for train-dvae and train-clip, stored at least at the model's input side `key`=`wanted`, with
    captions where the verb reads them (`probes.image_shards`); whether the run validates."""
    split = validation_split(cfg, partial(image_shards, captions=captions), ranks)
    if split is not None:
        shards, index = split
        not_upscaled(index, f"data.val_shards={shards}", wanted, f"{key}={wanted}",
                     "give data.val_shards of the training's size")
    return split is not None


def check_token_validation(cfg: DictConfig, model, ranks: int):
    """Token shards for `train`, of the code grid and codebook of the model (TransformerConfig), hence of
    data.shards (checked against it before); the split (`validation_split`), for the checks of its codes."""
    split = validation_split(cfg, token_shards, ranks)
    if split is not None:
        shards, index = split
        fits_token_grid(f"data.val_shards={shards}", shards, index, model,
                        "give data.val_shards encoded by the dVAE of data.shards")
    return split
