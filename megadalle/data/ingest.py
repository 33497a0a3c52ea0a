"""`megadalle index DIR`: make a directory of webdataset tars written elsewhere readable by megadalle.

img2dataset's output (`00000.tar` with `<key>.jpg/.txt/.json`, a `.parquet` and `_stats.json`
beside) or a colleague's `TarWriter` shards carry no `index.json` or offset files. Indexing reads
every sample once and decodes each field it has a safe decoder for (images fully, json, txt, npy;
pickles and unknown fields are never decoded): a sample whose image or caption fails, or that lacks a
required field, is skipped and counted by reason, like `prepare` skips bad inputs, and the offset files
simply leave it out, so no reader ever sees it. Metadata that fails (a string `.id`, a cut `.json`) is
the input's business: it is counted as a warning and the sample kept (`prepare` and `encode`, which copy
the json, leave it out). The tars are never rewritten. A tar cut short keeps the samples
before the cut. Shards are indexed in worker processes; index.json is written last.

`open_index` is what the readers call: it indexes such a directory on first use (with a message),
under a file lock so that ranks starting together index it once, and again whenever its tars differ from
those the index records (`coverage.py`: img2dataset added some since); indexing again reads only the new and
changed tars (`reuse.py`). A current index is read without
writing anything, so a read-only folder (a shared data set) needs only to be indexed once where it is
writable; one that needs indexing is refused with the command that does it (`ReadOnlyShards`).
A directory that holds megadalle offset files but no index.json is an unfinished `prepare`/`encode`
output, and is refused instead, by `open_index` and `megadalle index` alike (`refuse_unfinished`):
indexing it would publish an unfinished output, possibly mixing shards of two runs, as finished.
Indexing itself writes offset files before index.json, so it marks the directory (`INDEXING_MARK`)
while it runs: offsets beside that mark are an interrupted indexing, which is simply redone.
"""
from __future__ import annotations

import fcntl
import io
import os
import sys
import tarfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from megadalle.data import atomic
from megadalle.data.captions import caption_lines
from megadalle.data.coverage import INDEXED_BY, changes, tar_stats
from megadalle.data.fields import IMAGE_FIELDS, UnsafeFieldError, decode_field, extension
from megadalle.data.index import (INDEX_NAME, REPORT_NAME, ShardIndex, ShardInfo, ShardsNotFound, compact, load_offsets,
                                  offsets_count, offsets_path, save_offsets, to_spans)
from megadalle.data.pool import worker_pool
from megadalle.data.reuse import TarFindings, reusable
from megadalle.data.summary import PassSummary
from megadalle.data.tar import TarSample, members_end, walk

MEDIA_FIELDS = (*IMAGE_FIELDS, "codes.npy")
"""What a sample must carry one of, with `require_media`: something to train on."""
CAPTION_FIELDS = ("txt",)
"""The captions every reader takes: with the media, the fields that decide whether a sample is kept."""
DEFAULT_REQUIRE = ("txt",)
INDEXING_MARK = ".indexing"
"""Created before indexing writes its first offset file, removed once index.json is written."""


@dataclass
class ShardResult:
    """What a worker found in one tar: the kept samples' spans, the fields seen, the skipped ones."""

    name: str
    spans: np.ndarray
    fields: set[str]
    skipped: list[dict[str, str]]
    warnings: list[dict[str, str]]
    """Kept samples' metadata fields that do not decode (`SampleCheck.warnings`), entries as in `skipped`."""
    image_sizes: set[tuple[int, int]]

    def findings(self) -> TarFindings:
        """What a new index takes from this tar, and the next indexing again while it stays unchanged."""
        return TarFindings.read(self.name, len(self.spans), self.fields, self.image_sizes, self.skipped, self.warnings)


@dataclass
class IndexSummary(PassSummary):
    """`bad` and `warnings` entries: shard, key, reason, detail."""

    index: ShardIndex | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    """One entry per metadata field of a kept sample that does not decode."""
    tars: int = 0
    """`*.tar` files in the folder."""
    read: int = 0
    """Tars read this time: the others were unchanged since the last indexing, which found what they hold."""

    VERB = "index"

    def text(self) -> str:
        unchanged = self.tars - self.read
        note = f"\n  read {self.read} of {self.tars} tars: {unchanged} unchanged since the last indexing" \
            if unchanged else ""
        return super().text() + note


def check_image(data: bytes) -> tuple[int, int]:
    """Decode an image completely (a JPEG at 1/8 scale: every coefficient is still read); its original size."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    size = img.size
    img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
    img.load()
    return size


@dataclass
class SampleCheck:
    """What indexing found in one sample."""

    reason: str = ""
    """Why the sample is skipped; "" when it is kept."""
    detail: str = ""
    size: tuple[int, int] | None = None
    """Its image's size, when decoded."""
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(reason, detail) of each metadata field that does not decode (a string `.id`, a cut `.json`): counted,
    but the sample is kept, since only its image and caption decide whether it can be trained on."""


def check_sample(sample: TarSample, require: Iterable[str], require_media: bool, decode: bool = True) -> SampleCheck:
    """Decodes every field it safely can (with `decode=False` only the fields' presence is checked: fast, for
    sources one trusts); a deciding field (image, caption, codes, any of `require`) that fails skips the sample,
    another one is a warning."""
    missing = [name for name in require if name not in sample.data]
    if missing:
        return SampleCheck("missing_field", f"no {missing[0]!r} field{dotted_key_hint(sample, [missing[0]])}")
    if require_media and not any(name in sample.data for name in MEDIA_FIELDS):
        hint = dotted_key_hint(sample, MEDIA_FIELDS)
        return SampleCheck("no_media", f"none of {list(MEDIA_FIELDS)} among {sample.names}{hint}")
    check, deciding = SampleCheck(), {*MEDIA_FIELDS, *CAPTION_FIELDS, *require}
    for name, raw in sample.data.items() if decode else ():
        ext = extension(name)
        try:
            if ext in IMAGE_FIELDS:
                size = check_image(raw)
                if name in deciding:
                    check.size = size
            else:
                decode_field(name, raw)
        except UnsafeFieldError:
            continue  # a pickle (never decoded) or a field nobody reads: not ours to judge
        except Exception as err:  # PIL, zlib, json and unicode errors alike
            problem = f"bad_{ext}", f"{name}: {type(err).__name__}: {err}"
            if name in deciding:
                return SampleCheck(*problem)
            check.warnings.append(problem)
    if "txt" in sample.data and not caption_lines(sample.data["txt"].decode("utf-8", errors="replace")):
        return SampleCheck("empty_caption", "the txt field holds no caption (blank lines only)")
    return check


def dotted_key_hint(sample: TarSample, wanted: Iterable[str]) -> str:
    """Why a sample lacks a field it seems to hold: `photo.v1.jpg` is key `photo`, field `v1.jpg` (webdataset's
    rule: the key ends at the base name's first dot), so `photo.v1.*` and `photo.v2.*` are one sample without
    a `jpg`. "" when no field of the sample ends like a wanted one."""
    ends = {extension(name) for name in wanted}
    dotted = [name for name in sample.names if "." in name and extension(name) in ends]
    if not dotted:
        return ""
    return (f" (a dot in a file name's stem splits the key: `{sample.key}.{dotted[0]}` is key {sample.key!r}, "
            f"field {dotted[0]!r}; rename the files so that their stems hold no dot)")


def index_shard(path: Path, require: tuple[str, ...], require_media: bool, decode: bool = True) -> ShardResult:
    """Walk one tar, checking every sample (runs in a worker process)."""
    spans, fields, skipped, warnings, sizes, seen = [], set(), [], [], set(), set()

    def skip(key: str, reason: str, detail: str) -> None:
        skipped.append({"shard": path.name, "key": key, "reason": reason, "detail": detail})

    end, last = 0, None
    try:
        with open(path, "rb") as f:
            for sample in walk(f):
                end, last = sample.end, sample.key
                if sample.key in seen:
                    skip(sample.key, "duplicate_key", "the key appears twice in this shard (members not adjacent?)")
                    continue
                if sample.repeated:
                    skip(sample.key, "duplicate_key", f"samples with this key follow each other ({sample.repeated[0]!r} "
                                                      "appears twice); neither can be told from the other")
                    continue
                seen.add(sample.key)
                check = check_sample(sample, require, require_media, decode)
                if check.reason:
                    skip(sample.key, check.reason, check.detail)
                    continue
                warnings += [{"shard": path.name, "key": sample.key, "reason": reason, "detail": detail}
                             for reason, detail in check.warnings]
                spans.append((sample.start, sample.end))
                fields.update(sample.names)
                if check.size is not None:
                    sizes.add(check.size)
            content_end = members_end(f, end)
            f.seek(content_end)
            trailer = f.read(2 * tarfile.BLOCKSIZE)
        if trailer.strip(b"\0") or len(trailer) < 2 * tarfile.BLOCKSIZE:
            # cut at a header boundary: tarfile reads that as a normal end, but the end-of-archive blocks are
            # missing, so the last sample may have lost members after the cut (not when other members follow it)
            dropped = bool(spans) and spans[-1][1] == content_end
            if dropped:
                spans.pop()
            skip(last or "", "truncated_shard", "no end-of-archive marker: the tar was cut; "
                 + ("its last sample dropped" if dropped else "every sample before the cut kept"))
    except (tarfile.TarError, EOFError, OSError) as err:
        skip("", "truncated_shard", f"{type(err).__name__}: {err} (samples after this point are lost)")
    return ShardResult(path.name, np.array(spans, dtype=np.int64).reshape(-1, 2), fields, skipped, warnings, sizes)


def _shard_results(paths: list[Path], require: tuple[str, ...], require_media: bool, decode: bool, num_workers: int,
                   progress: bool) -> Iterator[ShardResult]:
    if not paths:  # every tar unchanged (some removed): a pool of no worker is an error
        return
    work = partial(index_shard, require=require, require_media=require_media, decode=decode)
    with tqdm(total=len(paths), desc="index", unit=" shards", disable=not progress) as bar:
        if num_workers == 0:
            for result in map(work, paths):
                bar.update(1)
                yield result
            return
        with worker_pool(min(num_workers, len(paths))) as pool:
            for result in pool.imap(work, paths):
                bar.update(1)
                yield result


def index_directory(root: str | Path, require: Iterable[str] = (), require_media: bool = False,
                    num_workers: int | None = 0, progress: bool = False, report: str | Path | None = None,
                    meta: dict[str, Any] | None = None, decode: bool = True,
                    announce: Callable[[int, int], None] | None = None) -> IndexSummary:
    """Index the `*.tar` files of `root` (sorted by name), checking every sample; writes offset files, the
    report (default <root>/index-report.json) and index.json last. Shards with no usable sample are left out.
    A tar the earlier index recorded at its present size, under the same options, is not read again (`reuse.py`):
    the index comes out as if every tar had been. `announce(reading, tars)` is called before reading starts.

    `meta.image_size` is recorded when every image is a square of one size (what a loader then defaults to).
    """
    start, root = time.perf_counter(), Path(root)
    tars = tar_stats(root)  # taken before reading: a tar that changes meanwhile differs from the record next time
    if not tars:
        raise ShardsNotFound(f"{root}: no *.tar shards to index")
    refuse_unfinished(root, [root / tar["name"] for tar in tars])
    options = {"require": list(require), "require_media": require_media, "decode": decode}
    summary = IndexSummary(report=str(report or root / REPORT_NAME), tars=len(tars))
    found = reusable(root, tars, options, Path(summary.report))  # before index.json goes
    try:
        (root / INDEXING_MARK).touch()
    except OSError as err:
        raise read_only(root, f"cannot write into it ({err.strerror})") from None
    (root / INDEX_NAME).unlink(missing_ok=True)
    unread = [root / tar["name"] for tar in tars if tar["name"] not in found]
    summary.read = len(unread)
    if announce is not None:
        announce(len(unread), len(tars))
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    for result in _shard_results(unread, tuple(require), require_media, decode, workers, progress):
        if len(result.spans):
            save_offsets(root / result.name, compact(result.spans))
        found[result.name] = result.findings()
    shards, fields, sizes = [], set(), set()
    for tar in tars:
        tar_found = found[tar["name"]]
        summary.bad += tar_found.skipped
        summary.warnings += tar_found.warnings
        if tar_found.count:
            shards.append(ShardInfo(tar["name"], tar_found.count, tar["bytes"]))
            fields.update(tar_found.fields)
            sizes.update(tuple(size) for size in tar_found.image_sizes)
    summary.kept, summary.shards = sum(s.count for s in shards), len(shards)
    summary.skipped = dict(sorted(Counter(b["reason"] for b in summary.bad).items()))
    summary.warned = dict(sorted(Counter(w["reason"] for w in summary.warnings).items()))
    summary.seconds = time.perf_counter() - start
    atomic.write_json(summary.report, {"root": str(root), "kept": summary.kept, "shards": summary.shards,
                                       "skipped": summary.skipped, "bad": summary.bad, "warned": summary.warned,
                                       "warnings": summary.warnings})
    if summary.kept:
        square = {w for w, h in sizes if w == h}
        auto_meta = {"image_size": square.pop()} if len(sizes) == 1 and square else {}
        indexing = {**options, "tars": [found[tar["name"]].record(tar) for tar in tars]}
        summary.index = ShardIndex(root, shards, sorted(fields), {"indexed_by": INDEXED_BY, **auto_meta,
                                                                   **(meta or {})}, indexing)
        summary.index.save()
        (root / INDEXING_MARK).unlink()  # kept when nothing was published: stale offsets may remain
    return summary


def refuse_unfinished(root: Path, tars: list[Path]) -> None:
    """Raise when `root` holds offset files but neither index.json nor an interrupted indexing's mark:
    what a `prepare` or `encode` that was stopped (or still runs) leaves."""
    if (root / INDEX_NAME).is_file() or (root / INDEXING_MARK).exists():
        return
    if any(offsets_path(p).is_file() for p in tars):
        raise ShardsNotFound(
            f"{root} is not a finished megadalle shard directory: it holds offset files (*.tar.idx) but no "
            f"{INDEX_NAME}, what an unfinished `prepare` or `encode` leaves (stopped, or still running); rerun "
            f"it into {root} rather than indexing it")


class ReadOnlyShards(ShardsNotFound):
    """A folder of tars that needs indexing (no index.json, or tars changed since) but cannot be written."""


def read_only(root: Path, why: str) -> ReadOnlyShards:
    return ReadOnlyShards(f"{root}: {why}, and indexing writes index.json and offset files beside the tars: run "
                          f"`megadalle index {root}` where the folder is writable")


@contextmanager
def _locked(root: Path) -> Iterator[bool]:
    """An exclusive lock on <root>/.index.lock: processes indexing the same directory take turns. Yields whether
    this process may write into `root`.

    A directory this process cannot write to (a read-only mount) gets no lock: indexing writes beside
    the tars, so no process can be indexing it, and there is nothing to wait for."""
    try:
        lock = open(root / ".index.lock", "a")
    except OSError:
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield os.access(root, os.W_OK)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_index(root: str | Path, key: str | None = None) -> ShardIndex:
    """The directory's index; tars written elsewhere with no index.json, or changed since it was written, are
    indexed first, with a message. `key` (e.g. "data.shards") names the setting in the error when there is
    nothing to read."""
    try:
        return _open_index(Path(root))
    except ShardsNotFound as err:
        if key is None:
            raise
        raise type(err)(f"{key}={str(root)!r}: {err}") from None


def _open_index(root: Path) -> ShardIndex:
    """A current index is returned without writing anything (a read-only folder needs nothing more)."""
    if not root.is_dir():
        return ShardIndex.load(root)  # the usual error
    index = _covering(root)
    if index is not None:
        return index
    if not (root / INDEX_NAME).is_file() and not any(root.glob("*.tar")):
        return ShardIndex.load(root)  # nothing to index: the usual error
    # Offset files without index.json are an unfinished megadalle output, an interrupted indexing or
    # another process indexing right now (it writes them first): only under the lock can they be told apart.
    with _locked(root) as writable:
        if _covering(root) is None:  # else another process indexed it while this one waited
            _index_now(root, writable)
    return ShardIndex.load(root)


def _covering(root: Path) -> ShardIndex | None:
    """The folder's index when it has one that covers its tars as they are now."""
    if not (root / INDEX_NAME).is_file():
        return None
    index = ShardIndex.load(root)
    return None if changes(index) else index


def _index_now(root: Path, writable: bool) -> None:
    """Index `root` (under the lock), which has no index.json or one its tars no longer match, with the options
    of the earlier indexing (defaults if none)."""
    old = ShardIndex.load(root) if (root / INDEX_NAME).is_file() else None
    if old is None:
        tars = sorted(root.glob("*.tar"))
        refuse_unfinished(root, tars)
        why = f"{len(tars)} tar shards without {INDEX_NAME}"
    else:
        why = f"tar shards changed since {INDEX_NAME} was written ({changes(old)})"
    if not writable:
        raise read_only(root, f"{why}; the folder is read-only")

    def announce(reading: int, tars: int) -> None:
        unchanged = f" ({tars - reading} unchanged since)" if reading < tars else ""
        print(f"[index] {root}: {why}; indexing them now, reading {reading} of {tars} tars{unchanged} and checking "
              f"every sample (`megadalle index {root}` does the same ahead of time)", file=sys.stderr, flush=True)

    options = (old.indexing if old else None) or {}
    summary = index_directory(root, options.get("require", DEFAULT_REQUIRE), options.get("require_media", True),
                              num_workers=None, progress=True, decode=options.get("decode", True), announce=announce)
    print(summary.text(), file=sys.stderr, flush=True)


def verify(root: str | Path, decode_fields: list[str] | None = None) -> list[str]:
    """Problems of an indexed shard directory (empty list: healthy): files missing or resized since the index,
    offset files that disagree with the counts, and, for `decode_fields`, samples that fail to decode."""
    index, problems = ShardIndex.load(root), []
    for info, path in zip(index.shards, index.paths()):
        if not path.is_file():
            problems.append(f"{info.name}: missing")
            continue
        if path.stat().st_size != info.bytes:
            problems.append(f"{info.name}: {path.stat().st_size} bytes, index.json says {info.bytes}")
            continue
        offsets = load_offsets(path)
        if offsets_count(offsets) != info.count:
            problems.append(f"{info.name}: {offsets_count(offsets)} samples in its offsets, index.json says "
                            f"{info.count}")
            continue
        if decode_fields:
            problems += _decode_problems(path, to_spans(offsets), decode_fields)
    return problems


def _decode_problems(path: Path, spans: np.ndarray, fields: list[str]) -> list[str]:
    problems = []
    with open(path, "rb") as f:
        for start, end in spans:
            f.seek(int(start))
            try:
                for sample in walk(f.read(int(end - start)), set(fields)):
                    missing = [name for name in fields if name not in sample.data]
                    if missing:
                        problems.append(f"{path.name}: sample {sample.key!r} lacks {missing}")
                    for name in fields:
                        if name in sample.data:
                            decode_field(name, sample.data[name])
            except Exception as err:
                problems.append(f"{path.name}: {type(err).__name__}: {err}")
    return problems


def run(cfg) -> int:
    """`megadalle index DIR` (or `dir=DIR`); exit code 1 when no sample is usable."""
    from megadalle.config import build, top_level
    from megadalle.config.data import IndexConfig

    ic = build(IndexConfig, top_level(cfg, IndexConfig), "")
    summary = index_directory(ic.dir, ic.require, ic.require_media, ic.num_workers, progress=True, report=ic.report,
                              decode=ic.decode)
    print(summary.text())
    if not summary.kept:
        print(f"index: no usable sample in {ic.dir}; no index.json written", flush=True)
        return 1
    return 0
