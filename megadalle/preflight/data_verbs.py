"""The checks of the verbs that make the training data (prepare, tokenizer, encode): their input is there and
readable, and their output can be written, before a whole data set is read: prepare and encode write only into a
new folder or over their own earlier output (`data/output_guard.py`)."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from megadalle.data.index import INDEX_NAME
from megadalle.preflight.image_size import not_upscaled
from megadalle.preflight.probes import PreflightError, captioned, exists, fits, image_shards, shard_index, writable


def check_prepare(cfg: DictConfig) -> None:
    """The input is there, and the output holds nothing but an earlier prepare's shards (once the keys are valid: an
    output that is the input is refused as such, not for the input's tars)."""
    from megadalle.config import build, top_level
    from megadalle.config.data import PrepareConfig
    from megadalle.data.output_guard import check_output

    exists("input", cfg.input)
    build(PrepareConfig, top_level(cfg, PrepareConfig), "")
    check_output(cfg.output, "prepare")
    check_report(cfg.get("report"), Path(str(cfg.input)), "report=<output>/report.json")


def check_index(cfg: DictConfig) -> None:
    exists("dir", cfg.dir, "directory")
    check_report(cfg.get("report"), None, "report=<dir>/index-report.json")


def check_report(report, input: Path | None, default: str) -> None:
    """`report=`, where given: a file that can be written and holds no data of the run's. It replaced whatever it
    named, in silence: an input image or tar, the output's index.json, a tokenizer named by a typo. So it may not
    be a shard, an offset file or an index.json, nor be prepare's `input` manifest or lie in its input folder, and a
    file already there must be an earlier report (a JSON object with `kept`)."""
    if report is None:
        return
    writable("report", report, "file", "report.json")
    path = Path(str(report))
    fits(path.name != INDEX_NAME and not path.name.endswith((".tar", ".idx")),
         f"report={report}: a name the shards' own files have (index.json, *.tar, *.tar.idx); give another path, "
         f"e.g. {default} (the default)")
    inside = input is not None and (path.resolve() == input.resolve() or input.is_dir()
                                    and path.resolve().is_relative_to(input.resolve()))
    fits(not inside, f"report={report}: inside input={input}, whose files it would replace or join; give a path "
                     f"outside it, e.g. {default} (the default)")
    fits(not path.exists() or earlier_report(path), f"report={report}: an existing file that is no report (a JSON "
                                                   f"object with `kept`), which it would replace; give another path, "
                                                   f"e.g. {default} (the default)")


def earlier_report(path: Path) -> bool:
    """Whether the file at `path` is a report of prepare's or index's (that a rerun replaces)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and "kept" in record


def check_tokenizer(cfg: DictConfig) -> None:
    """The output lies outside the input shards, and an existing one is a tokenizer, replaced only with
    `overwrite=true` (TokenizerConfig.overwrite says why): any file there was called a tokenizer, and the advised
    overwrite=true wrote the model over the shards' index.json or a photo."""
    from megadalle.data.digest import sha256

    captioned("input", cfg.input, shard_index("input", cfg.input))
    writable("output", cfg.output, "file", "tokenizer.model")
    output, shards = Path(str(cfg.output)).resolve(), Path(str(cfg.input)).resolve()
    fits(shards not in output.parents, f"output={cfg.output}: inside input={cfg.input}, the shards it reads; write "
                                       "the tokenizer outside them")
    if not output.is_file():
        return
    fits(is_sentencepiece(output), f"output={cfg.output}: an existing file that is no sentencepiece model, which "
                                   "it would replace; give another output=")
    if not cfg.get("overwrite", False):
        raise PreflightError(f"output={cfg.output}: holds a tokenizer already (sha256 {sha256(cfg.output)[:12]}), "
                             "which the runs trained with it need as it is; give another output=, or overwrite=true "
                             "to replace it")


def is_sentencepiece(path: Path) -> bool:
    """Whether the file at `path` loads as a sentencepiece model."""
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError):
        return False
    return True


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
