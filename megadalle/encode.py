"""`megadalle encode`: image shards -> token shards, each image's dVAE codes beside its caption.

Output sample: `codes.npy` (uint16 [H, W], the encoder's argmax as in the paper: no Gumbel noise),
`txt` (every caption line, tokenized later by the token loader so BPE dropout can apply) and
`json` (the input's metadata). One output shard per input shard, with the same name, written by
DATA's ShardWriter in a hidden staging folder and renamed into place when complete, just after its record
`<shard>.encoded.json`: a digest of the dVAE's weights, its config, the input shard's name,
sample count, size and modification time, and the output shard's own size and checksum. A rerun after a crash
skips every shard already there with the input's sample count and the same record, that record describing the very
tar there, and redoes only the rest; a rerun with another dVAE or another input re-encodes every shard, and says so:
a directory never mixes the codes of two models (with another grid size, index.json would describe codes that are
not there), and a record beside a tar something else wrote there (prepare's image shard) never passes it for codes.
An output holding anything but encode's own shards (prepare's, tars from elsewhere) is refused before any image is
encoded (`data/output_guard.py`).
index.json goes last, once every shard is complete; shards an earlier encode wrote for shards the input
no longer has are removed just before it. Several processes (RANK/WORLD_SIZE or srun)
split the (non-empty) shards round-robin; whichever finishes last writes the index. One encode at a time writes an
output (`<output>/.lock`, folder_lock.py): two at once, with other dVAEs, published one's codes under the other's
record. A full disk stops it with one line, its staging folder removed; the one a kill left goes when encode starts
again (`remove_staging`).
A validation split beside the input (`<input>/val/`, from `prepare val_fraction=`) is encoded the
same way into `<output>/val/`, so the Transformer holds out the samples the dVAE and CLIP held out; the split an
earlier encode carried over there goes when the input has none now (`encoded_split.py`): train would validate on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from megadalle.config import build, top_level
from megadalle.config.data import VAL_DIR
from megadalle.config.dvae import EncodeConfig
from megadalle.data import atomic
from megadalle.data.batches import ImageBatches, UnreadableSample, sample_name
from megadalle.data.fields import CODES_FIELD, decode_field
from megadalle.data.images import upscaled_message
from megadalle.data.index import INDEX_NAME, ShardIndex, ShardInfo, load_offsets, offsets_path
from megadalle.data.loader import image_fields, rank_and_world
from megadalle.data.output_guard import check_output
from megadalle.data.shards import ShardWriter, iter_shard, open_index
from megadalle.data.verb_outputs import RECORD_SUFFIX, first_sample_has, record_path
from megadalle.devices import pick_rank_device
from megadalle.disk_errors import refused
from megadalle.encoded_split import STAGING, remove_split, split_meta, stale_split
from megadalle.errors import UserError
from megadalle.folder_lock import output_lock
from megadalle.models.dvae import DVAE, load_dvae
from megadalle.progress import progress_bar
from megadalle.train.dvae_export import RUN_WEIGHTS, DVAEWeightsError, run_weights
from megadalle.train.rundir import RUN_JSON


def dvae_weights_file(value: str | Path) -> Path:
    """The weights `dvae_weights=value` means: a .safetensors file or an exported weights folder as given, or,
    for a train-dvae run directory, the file it exported (train/dvae_export.py)."""
    path = Path(value)
    if not path.is_dir():
        if not path.is_file():
            raise DVAEWeightsError(f"dvae_weights={value}: no such file")
        return path
    from megadalle.weights import INDEX, SINGLE

    if (path / INDEX).is_file() or (path / SINGLE).is_file():
        return path
    if (path / RUN_JSON).is_file():
        return run_weights(path, str(value))
    if (path / RUN_WEIGHTS).is_file():
        return path / RUN_WEIGHTS
    raise DVAEWeightsError(f"dvae_weights={value}: a directory that is neither a train-dvae run directory (no "
                           f"{RUN_JSON}) nor holds {RUN_WEIGHTS} or exported weights; pass a dVAE .safetensors file")


def weights_digest(model: DVAE) -> str:
    """A digest of the model's tensors (names, dtypes, shapes, bytes): the same weights give the same digest
    whichever file or folder they were read from, and other weights of the same shape a different one."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def dvae_digest(weights: str | Path) -> str:
    """The digest `encode` records of the dVAE `dvae_weights=weights` means (a file, or a train-dvae run's export):
    its weights are read for it (the paper's: ~98M parameters, ~390 MB in fp32)."""
    return weights_digest(load_dvae(dvae_weights_file(weights)))


def dvae_identity(model: DVAE) -> dict:
    """What every output shard's codes depend on: the dVAE's weights and config."""
    return {"dvae": weights_digest(model), "dvae_config": json.loads(json.dumps(asdict(model.cfg), default=str))}


def producer(dvae: dict, info: ShardInfo, path: Path) -> dict:
    """The record of one output shard: the dVAE and its input shard. Names, counts and sizes alone do not
    tell two inputs apart (tars are padded to 512 bytes, so `prepare` on other images of one size gives the
    same listing); the modification time does, and a copy that does not keep it is only encoded again."""
    return {**dvae, "input": {"name": info.name, "count": info.count, "bytes": info.bytes,
                              "mtime_ns": path.stat().st_mtime_ns}}


SAMPLED = 1 << 16
"""Bytes at each end of an output shard that its checksum covers."""


def tar_identity(tar: Path) -> dict:
    """What tells the output tar its record describes from any other put in its place: its size, and a CRC-32 of
    its offsets and of its first and last 64 KiB. Another dVAE's codes, another input's, or prepare's images differ
    from the first sample on; reading every shard whole on each rerun would not be cheap (10,000 shards of 40 MB
    for 100M images), reading both ends is."""
    size = tar.stat().st_size
    crc = zlib.crc32(offsets_path(tar).read_bytes())
    with open(tar, "rb") as stream:
        crc = zlib.crc32(stream.read(SAMPLED), crc)
        if size > SAMPLED:
            stream.seek(max(SAMPLED, size - SAMPLED))
            crc = zlib.crc32(stream.read(), crc)
    return {"bytes": size, "crc32": crc}


def shard_done(out_path: Path, count: int, made_by: dict) -> bool:
    """An output shard is complete when it and its offsets exist and hold the input's sample count, and its
    record says `made_by` encoded it (a shard of another dVAE or input has the right count, the wrong codes) into
    the tar that is there (a record alone passed a tar prepare wrote over encode's for the codes it described)."""
    record = record_path(out_path)
    if not (out_path.is_file() and offsets_path(out_path).is_file() and record.is_file()):
        return False
    try:
        written = json.loads(record.read_text())
    except ValueError:
        return False
    if not (isinstance(written, dict) and {k: v for k, v in written.items() if k != "output"} == made_by
            and len(load_offsets(out_path)) - 1 == count):
        return False
    if "output" not in written:  # written before records named their tar: trusted beside codes, not beside images
        return first_sample_has(out_path, CODES_FIELD)
    return written["output"] == tar_identity(out_path)


def input_meta(sample: dict) -> dict:
    """The input sample's json, copied into the token shard: {} when it has none, or one that does not parse
    (indexing keeps such a sample, with a warning: only its image and caption decide)."""
    try:
        return decode_field("json", sample["json"]) if "json" in sample else {}
    except ValueError:  # json's and unicode's decode errors alike
        return {}


class UnfinishedShard(UserError, RuntimeError):
    """A shard this process encoded that is still not the one its input's index lists."""


class DamagedShard(UserError, ValueError):
    """An input sample whose image does not decode or whose caption is not UTF-8 (`UnreadableSample`), named
    `<shard>:<key>`: nothing of its shard is published, and the shards encoded before it are kept for the rerun."""


def remove_staging(out: Path, others: set[str]) -> None:
    """Remove the staging folders left in `out` but those of the shards in `others`, which the other ranks of a split
    encode may be writing now. `encode_shard` removes its own when it ends, but a kill between its publish and that
    removal left an empty one, which no rerun removed: it skips the finished shard. Its callers hold the output's
    lock (`run`, for the ranks of its job) or are its only writer (the demo, one process in its own folder)."""
    for staging in out.glob(f"{STAGING}*"):
        if staging.name.removeprefix(STAGING) not in others:
            shutil.rmtree(staging, ignore_errors=True)


def encode_shard(model: DVAE, in_path: Path, out_path: Path, fields: tuple[str, ...], batch_size: int, made_by: dict,
                 bar: tqdm | None = None) -> int:
    """Encode one input shard into `out_path` (published atomically: its record first, then its offsets and the tar;
    a crash between them leaves a record that describes no tar there, so the shard is encoded again, and no tar of
    encode's without a record, which the rerun would refuse as not its own); the number of its images that were
    smaller than the dVAE's input and enlarged to it (`ImageBatches`' upscaled)."""
    device = next(model.parameters()).device
    maker = ImageBatches(model.cfg.image_size, fields)
    staging = out_path.parent / f"{STAGING}{out_path.name}"
    shutil.rmtree(staging, ignore_errors=True)
    samples = iter_shard(in_path, [*maker.fields, "json"], decode=False)
    upscaled = 0
    with refused(out_path, "rerun the same command (it encodes only the shards not done yet)"):
        try:
            with ShardWriter(staging, max_count=1 << 62, max_bytes=1 << 62) as writer:
                while chunk := [s for _, s in zip(range(batch_size), samples)]:
                    batch = maker(chunk, np.arange(len(chunk)), 0)
                    upscaled += int(batch["upscaled"].sum())
                    codes = model.encode(batch["image"].to(device)).to("cpu", torch.int32).numpy().astype(np.uint16)
                    for sample, text, grid in zip(chunk, batch["txt"], codes):
                        writer.write({"__key__": sample["__key__"], "codes.npy": grid, "txt": text,
                                      "json": input_meta(sample)})
                    if bar is not None:
                        bar.update(len(chunk))
            written = staging / "shard-000000.tar"
            if written.is_file():
                atomic.write_json(record_path(out_path), {**made_by, "output": tar_identity(written)})
                os.replace(offsets_path(written), offsets_path(out_path))
                os.replace(written, out_path)
        except UnreadableSample as err:
            raise DamagedShard(f"{sample_name(in_path, err.key)}: {err}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return upscaled


def say_upscaled(source: Path, upscaled: int, encoded: int, size: int) -> None:
    """Say how many of the images encoded now were enlarged to the dVAE's input (a tar from elsewhere holds
    thumbnails; the checks before the run refuse only a set whose index records one smaller size)."""
    if upscaled:
        print(f"[encode] {upscaled_message(source, upscaled, encoded, size, 'images encoded now', 'a blurry target')}",
              file=sys.stderr, flush=True)


def warn_stale(out: Path, stale: list[str]) -> None:
    """Say which existing shards are about to be replaced: a rerun that re-encodes is never silent."""
    if stale:
        names = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        print(f"[encode] {out}: re-encoding {len(stale)} shards ({names}) that another dVAE or another input "
              f"wrote (or whose <shard>{RECORD_SUFFIX} record does not describe them)", file=sys.stderr, flush=True)


def remove_surplus(out: Path, keep: set[str]) -> None:
    """Delete the shards an earlier encode wrote into `out` that the input no longer has (it shrank, or was
    re-sharded): index.json leaves them out, but they would hold disk and mislead whoever lists the folder.
    Only shards with encode's record go; a file encode did not write is left where it is."""
    surplus = sorted(r for r in out.glob("*" + RECORD_SUFFIX) if r.name.removesuffix(RECORD_SUFFIX) not in keep)
    for record in surplus:
        shard = record.with_name(record.name.removesuffix(RECORD_SUFFIX))
        for path in (shard, offsets_path(shard), record):
            path.unlink(missing_ok=True)
    if surplus:
        print(f"[encode] {out}: removed {len(surplus)} shards of an earlier encode that the input no longer has",
              file=sys.stderr, flush=True)


def encode_shards(model: DVAE, input: str | Path, output: str | Path, batch_size: int = 64,
                  rank: int = 0, world_size: int = 1, weights: str | Path | None = None,
                  split: dict | None = None) -> ShardIndex | None:
    """Encode this process's share of `input`'s shards; returns the token index once every shard is done. `weights`,
    the file `model` was read from, is recorded resolved in the index's meta (its "settings"): the advice on a changed
    output (coverage.py) names it in the encode that rebuilds it. `split` is what the meta records of a validation
    split carried with it (encoded_split.split_meta)."""
    out = Path(output)
    check_output(out, "encode")
    source = open_index(input)
    fields = image_fields(source)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_NAME).unlink(missing_ok=True)
    shards = [(info, path) for info, path in zip(source.shards, source.paths()) if info.count > 0]
    dvae = dvae_identity(model)
    made_by = {info.name: producer(dvae, info, path) for info, path in shards}
    mine = shards[rank::world_size]
    remove_staging(out, {info.name for info, _ in shards} - {info.name for info, _ in mine})
    todo = [(info, path) for info, path in mine if not shard_done(out / info.name, info.count, made_by[info.name])]
    warn_stale(out, [info.name for info, _ in todo if (out / info.name).is_file()])
    total, done = sum(i.count for i, _ in mine), sum(i.count for i, _ in mine) - sum(i.count for i, _ in todo)
    with progress_bar(total=total, initial=done, unit="img", desc=f"encode {source.root.name}",
                      disable=rank != 0) as bar:
        upscaled = sum(encode_shard(model, path, out / info.name, fields, batch_size, made_by[info.name], bar)
                       for info, path in todo)
    say_upscaled(source.root, upscaled, total - done, model.cfg.image_size)
    unfinished = [info for info, _ in mine if not shard_done(out / info.name, info.count, made_by[info.name])]
    if unfinished:  # encoded just now, yet not what the index lists: no rerun would finish it, nor any other rank
        info = unfinished[0]
        raise UnfinishedShard(f"{out / info.name}: encoded, but not as the {info.count} samples {source.root}/"
                              f"{INDEX_NAME} lists for {info.name}: the input changed after it was indexed; index "
                              f"it again (`megadalle index {source.root}`) and rerun the same command")
    if not all(shard_done(out / info.name, info.count, made_by[info.name]) for info, _ in shards):
        return None
    infos = [ShardInfo(info.name, info.count, (out / info.name).stat().st_size) for info, _ in shards]
    # The input absolute: the rebuild advice on a changed output (coverage.py) names it, from wherever it is read. Not
    # resolved: an input's `val/` linked elsewhere keeps its name, and with it its output (`<output>/val/`).
    meta = {"grid_size": model.cfg.grid_size, "vocab_size": model.cfg.vocab_size, "image_size": model.cfg.image_size,
            "source": os.path.abspath(source.root), "dvae": dvae["dvae"], **(split or {})}
    if weights is not None:
        meta["settings"] = {"dvae_weights": str(Path(weights).resolve())}
    remove_surplus(out, {info.name for info, _ in shards})
    index = ShardIndex(out, infos, ["codes.npy", "json", "txt"], meta)
    index.save()
    return index


def folder_pairs(input: str | Path, output: str | Path) -> list[tuple[Path, Path]]:
    """The (input, output) folders `encode input= output=` encodes: the validation split of the input, if it has one,
    into the output's, then the two given. The output's index.json, which says the encode finished, comes last (as
    `prepare` writes its split first): an encode killed while it encoded the split left an output that looked
    finished, and `train` ran without validation, advising a data.val_shards it then refused."""
    pairs = [(Path(input), Path(output))]
    if (Path(input) / VAL_DIR / INDEX_NAME).is_file():
        pairs.insert(0, (Path(input) / VAL_DIR, Path(output) / VAL_DIR))
    return pairs


def run(cfg: DictConfig) -> int:
    """One encode at a time writes an output (folder_lock.py; encode's staging and published names are fixed): a
    second is refused before it reads the dVAE or touches a file. The processes of a split encode hold it
    together."""
    opts = build(EncodeConfig, top_level(cfg, EncodeConfig), "")
    rank, world = rank_and_world()
    with output_lock(opts.output, "encode", shared=world > 1):
        pairs = folder_pairs(opts.input, opts.output)
        # Every rank looks, so that a refusal stops them all before any work; rank 0 alone removes it.
        stale = stale_split(opts.output) if len(pairs) == 1 else None
        weights = dvae_weights_file(opts.dvae_weights)
        model = load_dvae(weights, pick_rank_device(opts.device, world))
        if stale is not None and rank == 0:
            remove_split(stale)
        (Path(opts.output) / INDEX_NAME).unlink(missing_ok=True)  # unfinished until its split is done too
        for (source, target), split in zip(pairs, split_meta(len(pairs))):
            index = encode_shards(model, source, target, opts.batch_size, rank, world, weights, split)
            if index is not None:
                print(f"[encode] {index.total} samples in {len(index.shards)} shards -> {index.root} "
                      f"({model.cfg.grid_size}x{model.cfg.grid_size} codes)", file=sys.stderr)
            else:  # a split encode: the rank that completes the set writes index.json; until then it is unfinished
                print(f"[encode] rank {rank} of {world}: its shards of {source} are done; {target}/index.json comes "
                      "when every rank's are (a rank that stopped is rerun with the same command)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # `python -m megadalle.encode ARGS` is `megadalle encode ARGS`
    from megadalle.cli import run_verb

    run_verb("encode")
