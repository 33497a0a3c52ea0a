"""`megadalle index DIR`'s work: every tar of a folder checked (`shard.py`), offset files, index.json last.
Indexing again reads only the tars that are new or changed since the last indexing (`reuse.py`).

The shards are checked in worker processes; shards with no usable sample are left out. Offset files are
written before index.json, so the folder is marked (`INDEXING_MARK`) while indexing runs: offsets beside
that mark are an interrupted indexing, which is simply redone. Offsets without index.json nor the mark
are an unfinished `prepare`/`encode` output and are refused (`refuse_unfinished`): indexing it would
publish an unfinished output, possibly mixing shards of two runs, as finished.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from megadalle.config.override import command_line
from megadalle.data import atomic
from megadalle.data.coverage import INDEXED_BY, refuse_own_output, tar_stats
from megadalle.data.index import (INDEX_NAME, REPORT_NAME, ShardIndex, ShardInfo, ShardsNotFound, compact,
                                  compressed_note, not_shards, offsets_path, save_offsets)
from megadalle.data.ingest.shard import ShardResult, index_shard
from megadalle.data.nested import nested_note, nested_tars
from megadalle.data.pool import worker_pool
from megadalle.data.reuse import reusable
from megadalle.data.summary import PassSummary
from megadalle.errors import StoppedBySignal
from megadalle.progress import progress_bar

INDEXING_MARK = ".indexing"
"""Created before indexing writes its first offset file, removed once index.json is written."""


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
    compressed: str = ""
    """`index.compressed_note` of the folder: compressed tars beside the plain ones, which no reader takes (they were
    left out without a word, and their samples with them)."""

    VERB = "index"

    def text(self) -> str:
        unchanged = self.tars - self.read
        note = f"\n  read {self.read} of {self.tars} tars: {unchanged} unchanged since the last indexing" \
            if unchanged else ""
        compressed = f"\n  left out: {self.compressed}" if self.compressed else ""
        return super().text() + note + compressed


class IndexingStopped(StoppedBySignal):
    """A stop signal reached a training verb while it indexed its data (`stopped`)."""


POLL_S = 1.0
"""How often waiting for the workers looks at `stopped`."""


def _shard_results(paths: list[Path], options: dict[str, Any], num_workers: int, progress: bool,
                   stopped: Callable[[], bool]) -> Iterator[ShardResult]:
    """Each tar's result, in order. `stopped()` is asked between results and while waiting for one: a training verb
    holds TERM from its start, so a preemption that TERMs the whole Slurm step kills the workers (their tasks
    lost: the pool's results never come) but not this process, which waited for them forever."""
    if not paths:  # every tar unchanged (some removed): a pool of no worker is an error
        return
    work, root = partial(index_shard, **options), paths[0].parent
    with progress_bar(total=len(paths), desc="index", unit=" shards", disable=not progress) as bar:
        if num_workers == 0:
            for path in paths:
                _stop_if(stopped, root)
                yield work(path)
                bar.update(1)
            return
        with worker_pool(min(num_workers, len(paths))) as pool:
            results = pool.imap(work, paths)
            for _ in paths:
                yield _next_result(results, stopped, root)
                bar.update(1)


def _next_result(results, stopped: Callable[[], bool], root: Path) -> ShardResult:
    """The pool's next result, asking `stopped()` every POLL_S while it waits for it."""
    while True:
        _stop_if(stopped, root)
        try:
            return results.next(timeout=POLL_S)
        except mp.TimeoutError:
            pass


def _stop_if(stopped: Callable[[], bool], root: Path) -> None:
    if stopped():
        raise IndexingStopped(f"stopped by signal while indexing {root}, before the run's first update: rerunning the "
                              "same command indexes it again and resumes from the last checkpoint")


def index_directory(root: str | Path, require: Iterable[str] = (), require_media: bool = False,
                    num_workers: int | None = 0, progress: bool = False, report: str | Path | None = None,
                    meta: dict[str, Any] | None = None, decode: bool = True,
                    announce: Callable[[int, int], None] | None = None,
                    stopped: Callable[[], bool] = lambda: False, min_side: int = 0) -> IndexSummary:
    """Index the `*.tar` files of `root` (sorted by name), checking every sample; writes offset files, the
    report (default <root>/index-report.json) and index.json last. Shards with no usable sample are left out.
    A tar the earlier index recorded at its present size, under the same options, is not read again (`reuse.py`):
    the index comes out as if every tar had been. `announce(reading, tars)` is called before reading starts;
    `stopped()`, while reading, ends it with IndexingStopped (the folder is indexed again next time).

    `meta.image_size` is recorded when every image is a square of one size (what a loader then defaults to).
    `min_side` > 0 skips the samples whose image's short side is below it as too_small (the loaders would upscale
    them to the model's input: a blurry target). Tars in subfolders are refused by name (`nested.py`).
    """
    start, root = time.perf_counter(), Path(root)
    if nested := nested_tars(root):
        raise ShardsNotFound(nested_note(root, nested))
    tars = tar_stats(root)  # taken before reading: a tar that changes meanwhile differs from the record next time
    if not tars:
        raise ShardsNotFound(not_shards(root) or f"{root}: no *.tar shards to index")
    refuse_unfinished(root, [root / tar["name"] for tar in tars])
    refuse_own_output(root)
    options = {"require": list(require), "require_media": require_media, "decode": decode, "min_side": min_side}
    summary = IndexSummary(report=str(report or root / REPORT_NAME), tars=len(tars), compressed=compressed_note(root))
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
    for result in _shard_results(unread, options, workers, progress, stopped):
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
    if "too_small" in summary.skipped:
        summary.notes["too_small"] = (f"short side below min_side={min_side}; set a lower min_side (0 keeps every "
                                      "size) to keep them (the loaders upscale them to the model's input, which adds "
                                      "no detail)")
    summary.seconds = time.perf_counter() - start
    atomic.write_json(summary.report, {"root": str(root), "kept": summary.kept, "shards": summary.shards,
                                       "skipped": summary.skipped, "notes": summary.notes, "bad": summary.bad,
                                       "warned": summary.warned,
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
                          f"`{command_line('index', dir=root)}` where the folder is writable")
