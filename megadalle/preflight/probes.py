"""The probes every verb's checks share: a path, a shard directory, a tokenizer, a place to write; each one a
PreflightError naming the key and the value when it cannot serve, so that no verb words the same mistake twice.

Shard directories record what wrote them in index.json's `meta`: `prepare` the image size, `encode`
the code grid side (`grid_size`), the codebook size (`vocab_size`) and the image size it encoded.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from megadalle.config.override import command_line, override_word
from megadalle.data.fields import CODES_FIELD, IMAGE_FIELDS
from megadalle.errors import UserError



class PreflightError(UserError):
    """A path or a data set that cannot work with the config; the message names the key and the value."""


def fits(ok: bool, message: str) -> None:
    if not ok:
        raise PreflightError(message)


WARNINGS: list[str] = []
"""Warnings of the running checks, said by `preflight` once every check has passed: a refusal after one would leave
two lines for one run that does not start."""


def warn(text: str) -> None:
    WARNINGS.append(text)


def exists(key: str, value, kind: str = "path") -> Path:
    """`value` is there as a `kind`. A caller asking for a directory names a file given first, with what to give
    instead (shard_index, weights_verbs.check_run)."""
    path = Path(str(value))
    ok = path.is_dir() if kind == "directory" else path.is_file() if kind == "file" else path.exists()
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

    path = Path(str(value))
    fits(not path.is_file(), f"{key}={value}: {not_a_shard_folder(key, path)}")
    exists(key, value, "directory")
    try:
        return open_index(value)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise PreflightError(f"{key}={value}: {str(err).splitlines()[0]}") from None


def not_a_shard_folder(key: str, path: Path) -> str:
    """What to do with the file `path` given for shards: a manifest or an image is `prepare`'s input (its folder,
    the advice for any file, led to a folder of images and a manifest, no shards either); another file (a tar, an
    index.json) lies in its shards' folder."""
    from megadalle.data.sources import IMAGE_EXTENSIONS, MANIFESTS

    suffix = path.suffix.lower()
    if suffix in MANIFESTS or suffix in IMAGE_EXTENSIONS:
        return (f"{'a manifest' if suffix in MANIFESTS else 'an image'}, not a folder of shards: make shards with "
                f"`{command_line('prepare', input=path, output='SHARDS')}` and use SHARDS instead")
    return f"a file, not a folder of shards; give its folder: {override_word(key, path.parent)}"


def image_shards(key: str, value, captions: bool = True):
    """The index of the image shards `key=value`, whose samples carry captions unless the reader takes the images
    alone (`captions` False: train-dvae's)."""
    index = shard_index(key, value)
    if not any(f in index.fields for f in IMAGE_FIELDS):
        hint = " (token shards from `encode`; this verb reads image shards from `prepare`)" \
            if CODES_FIELD in index.fields else ""
        raise PreflightError(f"{key}={value}: no image field among {index.fields}{hint}")
    return captioned(key, value, index) if captions else index


def captioned(key: str, value, index):
    """`index` (of the shards `key=value`) when its samples carry captions, which every reader of image shards takes
    with each image: tars indexed with `require=[]` were a KeyError traceback in `tokenizer`, `encode`, and
    `train-dvae` after its start-up."""
    if "txt" not in index.fields:
        raise PreflightError(f"{key}={value}: its samples have no txt caption (fields {index.fields}: indexed with "
                             "require=[]?), and megadalle reads each image with its caption; give shards of "
                             "captioned images (`megadalle prepare` makes them from images with .txt captions)")
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

    exists(key, value, "file")
    try:
        return Tokenizer(value).vocab_size
    except TokenizerError as err:
        raise PreflightError(f"{key}={value}: {err.reason}") from None


def export_target(value: str | None, kind: str | None = None, key: str = "weights") -> None:
    """Where train-dvae or train-clip exports the trained `kind` model (`weights`), or import-dvae writes the dVAE it
    converts (`output`), checked as `export` checks its output: the export comes after the whole training, and a
    path it cannot write (or may not replace: another model's file, a user's JSON where the config goes) failed
    only then, or was overwritten."""
    from megadalle.weights import AmbiguousOutput, OutputInTheWay, check_replaceable, one_file

    if value is None:
        return
    try:
        check_replaceable(value, kind=kind)
    except (OutputInTheWay, AmbiguousOutput) as err:
        why = str(err).removeprefix(f"output={value}: ").removeprefix(f"output={Path(value)}: ")
        raise PreflightError(f"{key}={value}: {why}") from None
    writable(key, value, "file" if one_file(value) else "folder")
