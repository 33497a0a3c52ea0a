"""The shards' image size against the model's input side, one check and one wording for every verb that reads
image shards into a model (train-dvae, train-clip, encode)."""
from __future__ import annotations

from omegaconf import DictConfig

from megadalle.preflight.probes import fits


def fits_image_size(index, cfg: DictConfig, key: str, wanted: int) -> None:
    """The loaders resize every image to the model's side: data.image_size may only repeat it, and
    shards stored smaller than the model's input would be upscaled (a wrong directory, or a wrong model)."""
    fits(cfg.data.get("image_size") in (None, wanted), f"data.image_size={cfg.data.image_size}: must be null or "
                                                       f"{key}={wanted} (the model's input)")
    not_upscaled(index, f"data.shards={cfg.data.shards}", wanted, f"{key}={wanted}",
                 f"set {key}={index.meta.get('image_size')} or smaller")


def not_upscaled(index, shards: str, wanted: int, subject: str, remedy: str) -> None:
    """Images stored smaller than the model's input side `wanted` would be upscaled: refused, naming `subject`."""
    stored = index.meta.get("image_size")
    fits(stored is None or int(stored) >= wanted,
         f"{subject}: the images of {shards} are {stored} px, smaller than the model's input ({remedy}, or prepare "
         f"the shards at {wanted} px)")
