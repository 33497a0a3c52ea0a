"""The checks of the verbs that make the training data (prepare, tokenizer, encode): their input is there and
readable, and their output can be written, before a whole data set is read: prepare and encode write only into a
new folder or over their own earlier output (`data/output_guard.py`)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from megadalle.preflight.image_size import not_upscaled
from megadalle.preflight.probes import PreflightError, exists, image_shards, shard_index, writable


def check_prepare(cfg: DictConfig) -> None:
    """The input is there, and the output holds nothing but an earlier prepare's shards (once the keys are valid: an
    output that is the input is refused as such, not for the input's tars)."""
    from megadalle.config import build, top_level
    from megadalle.config.data import PrepareConfig
    from megadalle.data.output_guard import check_output

    exists("input", cfg.input)
    build(PrepareConfig, top_level(cfg, PrepareConfig), "")
    check_output(cfg.output, "prepare")


def check_tokenizer(cfg: DictConfig) -> None:
    """An existing output is replaced only with `overwrite=true` (TokenizerConfig.overwrite says why)."""
    from megadalle.data.digest import sha256

    shard_index("input", cfg.input)
    writable("output", cfg.output, "file", "tokenizer.model")
    if Path(str(cfg.output)).is_file() and not cfg.get("overwrite", False):
        raise PreflightError(f"output={cfg.output}: holds a tokenizer already (sha256 {sha256(cfg.output)[:12]}), "
                             "which the runs trained with it need as it is; give another output=, or overwrite=true "
                             "to replace it")


def check_encode(cfg: DictConfig) -> None:
    """The weights exist (a run directory stands for its export), the output and its validation split hold nothing
    but encode's own shards, and the images are not smaller than the dVAE's input, as train-dvae checks: the size is
    read from the weights' config JSON, not the weights."""
    from megadalle.config import build, top_level
    from megadalle.config.dvae import EncodeConfig
    from megadalle.data.output_guard import check_output
    from megadalle.encode import dvae_weights_file, folder_pairs
    from megadalle.weights import read_config

    try:
        weights = dvae_weights_file(cfg.dvae_weights)
    except FileNotFoundError as err:
        raise PreflightError(str(err)) from None
    index = image_shards("input", cfg.input)
    writable("output", cfg.output, "folder")
    build(EncodeConfig, top_level(cfg, EncodeConfig), "")  # an output that is the input is refused as such
    for _, target in folder_pairs(cfg.input, cfg.output):
        check_output(target, "encode")
    size = read_config(weights, "dvae").get("image_size")
    if size is not None:
        not_upscaled(index, f"input={cfg.input}", int(size), f"dvae_weights={cfg.dvae_weights} (a dVAE of {size} px)",
                     "use a dVAE trained at the shards' size or smaller")
