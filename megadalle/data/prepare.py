"""`megadalle prepare`: images + captions -> webdataset shards, bad inputs skipped and reported.

Inputs are listed in a fixed order (`sources.py`), converted in worker processes (`convert.py`)
and written by the main process in input order, so the shards are identical for any number of
workers. Rerunning into the same output rebuilds it: the writer removes index.json first (the
directory reads as unfinished meanwhile), replaces shards by atomic renames, deletes shards left
over from a larger earlier run and writes index.json last. Skipped inputs are listed with their
reason in report.json; a summary is printed at the end.

With `val_fraction > 0` a deterministic share of the samples (by a hash of each source image's bytes, see
`split.py`: the same image is on the same side wherever the data lies and however it is named) goes to a validation
split in `<output>/val/`, its own shards and index; the training shards in `<output>/` then exclude them. Shards with
their own split (another prepare's output, being resized) keep it: a sample of `<input>/val/` goes to
`<output>/val/`, and `val_fraction` is refused for them. A rerun without either removes a stale `<output>/val/`; a
`val/` holding anything megadalle does not write there is refused before any work (`split.py`), never deleted. Exact
duplicates (the same image bytes and caption) are kept and counted (`duplicates.py`).
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from megadalle.config.data import PrepareConfig
from megadalle.data import atomic
from megadalle.data.convert import ConvertOptions, Result, convert, crop_note, skip_notes, upscale_note
from megadalle.data.duplicates import Duplicates
from megadalle.data.index import REPORT_NAME, is_compressed_tar
from megadalle.data.ingest.dropped import UNLISTED
from megadalle.data.names import shown, shown_in
from megadalle.data.output_guard import check_output
from megadalle.data.pool import worker_pool
from megadalle.data.shards import ShardWriter
from megadalle.data.split import (SPLIT_RULE, VAL_DIR, SecondSplitError, check_split_dir, is_validation, redrawn_note,
                                  remove_split_dir, split_rule)
from megadalle.data.sources import UNREAD_PHOTOS, Item, dropped_by_index, find_items
from megadalle.data.summary import NoUsableInput, PassSummary
from megadalle.disk_errors import refused
from megadalle.errors import UserError
from megadalle.folder_lock import output_lock
from megadalle.progress import progress_bar
from megadalle.warn import warn


NOT_SETTINGS = ("input", "output", "num_workers", "report")
"""PrepareConfig's fields that do not decide what prepare writes: where it reads and writes (the advice names them
apart), how many processes convert, and where the report goes."""


def settings(config: type = PrepareConfig) -> tuple[str, ...]:
    """The keys besides input and output that decide what prepare writes: every field of `config` but NOT_SETTINGS,
    so that a new one is recorded without being listed (index.json's meta records them, and the advice on a changed
    output, coverage.py, gives those not at their default, so that running it rebuilds the same folder: given input
    and output alone, it had rebuilt at 256 px without the val split, or skipped every image of a 32 px source as
    too_small)."""
    return tuple(f.name for f in fields(config) if f.name not in NOT_SETTINGS)


SETTINGS = settings()


@dataclass
class PrepareSummary(PassSummary):
    """`kept` counts both splits; `bad` entries: source, reason, detail."""

    index_skipped: dict[str, int] = field(default_factory=dict)
    """Of the skipped, per reason, those that the index of a folder of tars written elsewhere left out (listed in
    its index report, not in `bad`): prepare reads only what the index keeps."""
    val_kept: int = 0
    """Of the kept samples, those held out in `<output>/val/`."""
    heavy_crops: int = 0
    """Of the kept samples, those whose image lost more than half its area to the centre crop."""
    crop_note: str = ""
    """What `heavy_crops` means and the key that skips such images (`convert.crop_note`)."""
    upscaled: int = 0
    """Of the kept samples, those whose image was enlarged to image_size (short side below it)."""
    upscale_note: str = ""
    """What `upscaled` means and the key that skips such images (`convert.upscale_note`)."""
    duplicates: int = 0
    """Of the kept samples, those with the same image bytes and caption as an earlier one (`duplicates.py`)."""
    split_note: str = ""
    """Set when this run redrew a split an older rule had drawn in `<output>/val/` (`split.redrawn_note`)."""
    shared_captions: int = 0
    """Of the inputs, images whose caption file another image of their name reads too (`d.jpg` and `d.png` beside
    one `d.txt`: often a converted copy left beside its original, the same picture trained on twice)."""
    shared_note: str = ""
    """The first of them, for the summary's line."""

    VERB = "prepare"
    UNIT = "inputs"

    def kept_note(self) -> str:
        return f" ({self.val_kept} held out for validation)" if self.val_kept else ""

    def kept_lines(self) -> list[str]:
        duplicates = ("exact duplicates: the same image bytes and caption as an earlier sample (kept, so trained on "
                      "more often; always on one side of the split)")
        return [f"  kept    {count:>6}  {note}" for count, note in ((self.heavy_crops, self.crop_note),
                                                                   (self.upscaled, self.upscale_note),
                                                                   (self.duplicates, duplicates),
                                                                   (self.shared_captions, self.shared_note)) if count] \
            + [f"  note: {self.split_note}"] * bool(self.split_note)


def convert_all(items: list[Item], opts: ConvertOptions, num_workers: int) -> Iterator[Result]:
    """Results in input order; `num_workers` processes (0: in this process)."""
    work = partial(convert, opts=opts)
    if num_workers == 0:
        yield from map(work, items)
        return
    with worker_pool(num_workers) as pool:
        yield from pool.imap(work, items, chunksize=max(1, min(64, len(items) // (num_workers * 8) or 1)))


def shared_captions(items: list[Item]) -> tuple[int, str]:
    """(how many images read a caption file that another image reads too, the summary's note on them): kept, as the
    user may mean them, and said, as they rarely do."""
    readers: dict[Path, list[str]] = {}
    for item in items:
        if item.caption_file is not None and item.problem is None:
            readers.setdefault(item.caption_file, []).append(item.source)
    shared = {caption: sources for caption, sources in readers.items() if len(sources) > 1}
    if not shared:
        return 0, ""
    caption, sources = next(iter(shared.items()))
    return sum(map(len, shared.values())), (
        f"images sharing a caption file with another image of their name (e.g. {' and '.join(sources)} both read "
        f"{caption.name}): each is trained on with it, the same picture twice where one is a converted copy; "
        "remove or rename the copies not meant")


def finish(writer: ShardWriter, count: int) -> int:
    """Publish a writer's index when it holds samples (else leave its directory unfinished); its shard count."""
    if count:
        return len(writer.close().shards)
    writer.abort()
    return 0


def prepare(cfg: PrepareConfig, progress: bool = True) -> PrepareSummary:
    """Convert `cfg.input` into shards at `cfg.output`; returns the summary (also written to the report). One
    prepare at a time writes an output (folder_lock.py): the writers' temporary names are fixed, and two at once,
    at other sizes, published an index.json over a tar of both. The second is refused once it has listed its input,
    before it writes anything (an input with nothing to convert is refused before an output folder is made). A disk
    that does not take the shards is one line (disk_errors), and leaves no index.json: no reader takes them for
    finished."""
    start = time.perf_counter()
    val_dir = Path(cfg.output) / VAL_DIR
    check_split_dir(val_dir)  # before indexing an input or writing anything
    check_output(cfg.output, "prepare")  # (preflight checks it too; the demo calls this function directly)
    items = find_items(cfg.input, cfg.image_column, cfg.caption_column)
    held = sum(item.held_out for item in items)
    if held and cfg.val_fraction > 0:
        raise SecondSplitError(f"val_fraction={cfg.val_fraction}: {cfg.input} has its own validation split "
                               f"({held} samples in {Path(cfg.input) / VAL_DIR}), which is kept as it is; leave "
                               "val_fraction at 0")
    with output_lock(cfg.output, "prepare"), refused(then=f"rerun the same command (it rebuilds {cfg.output})"):
        return _convert(cfg, items, held, start, progress)


def _convert(cfg: PrepareConfig, items: list[Item], held: int, start: float, progress: bool) -> PrepareSummary:
    """`prepare` once its input is listed (`held` of its items in the input's own validation split), holding its
    output."""
    val_dir = Path(cfg.output) / VAL_DIR
    left_out = dropped_by_index(Path(cfg.input)) if any(item.span is not None for item in items) else Counter()
    opts = ConvertOptions(cfg.image_size, cfg.format, cfg.quality, cfg.min_side, cfg.max_pixels, cfg.max_aspect)
    workers = (os.cpu_count() or 1) if cfg.num_workers is None else cfg.num_workers
    # The input resolved: the rebuild advice on a changed output (coverage.py) names it, from wherever it is read.
    meta = {"image_size": cfg.image_size, "format": cfg.format, "source": shown(str(Path(cfg.input).resolve())),
            "settings": {key: getattr(cfg, key) for key in SETTINGS}}
    summary = PrepareSummary(report=str(cfg.report or Path(cfg.output) / "report.json"))
    # The rule of the split written: this run's when it draws one, the input's when it keeps the input's own
    rule = SPLIT_RULE if cfg.val_fraction > 0 else \
        split_rule(Path(cfg.input) / VAL_DIR) if held else None
    if rule is not None:
        meta["split_rule"] = rule
    if cfg.val_fraction > 0:
        summary.split_note = redrawn_note(val_dir, split_rule(val_dir))  # before this run replaces it
    writer = ShardWriter(cfg.output, cfg.shard_max_samples, cfg.shard_max_bytes, meta)
    remove_split_dir(val_dir)  # a stale split must not be read as this run's
    val_writer = ShardWriter(val_dir, cfg.shard_max_samples, cfg.shard_max_bytes, {**meta, "split": "val"}) \
        if cfg.val_fraction > 0 or held else None
    reasons: Counter[str] = Counter()
    duplicates = Duplicates()
    try:
        results = convert_all(items, opts, workers)
        for result in progress_bar(results, total=len(items), desc="prepare", unit=" images", disable=not progress):
            for message in result.warnings:
                warn(f"{result.source}: {message}", "[prepare] warning:")
            if result.sample is not None:
                held = result.held_out or is_validation(result.digest, cfg.val_fraction)
                duplicates.add(result.digest, result.sample["txt"])
                (val_writer if held else writer).write(result.sample)
                summary.kept += 1
                summary.val_kept += held
                summary.heavy_crops += result.heavy_crop
                summary.upscaled += result.upscaled
            else:
                reasons[result.reason] += 1
                summary.bad.append({"source": result.source, "reason": result.reason, "detail": result.detail})
        if val_writer is not None:  # first: the output's own index.json, which says it is finished, comes last
            summary.shards += finish(val_writer, summary.val_kept)
        summary.shards += finish(writer, summary.kept - summary.val_kept)
    except BaseException:  # a full disk too: the shard being written goes, and no index.json says it is finished
        for w in (writer, val_writer):
            if w is not None:
                w.abort()
        raise
    if val_writer is not None and not summary.val_kept:
        remove_split_dir(val_dir)
    reasons.update(left_out)
    summary.skipped, summary.seconds = dict(sorted(reasons.items())), time.perf_counter() - start
    summary.index_skipped, summary.duplicates = dict(sorted(left_out.items())), duplicates.count
    summary.shared_captions, summary.shared_note = shared_captions(items)
    summary.crop_note, summary.upscale_note = crop_note(opts), upscale_note(opts)
    summary.notes = {reason: note for reason, note in skip_notes(opts).items() if reason in reasons}
    for reason, count in left_out.items():
        listed = f"its {REPORT_NAME} does not list them" if reason == UNLISTED else f"its {REPORT_NAME} lists them"
        note = f"{count} of them left out when {cfg.input} was indexed ({listed})"
        summary.notes[reason] = f"{summary.notes[reason]}; {note}" if reason in summary.notes else note
    unread = [f"{count} of them {what}" for what, count in unread_kinds(summary.bad).items() if count]
    if unread:
        summary.notes["unrecognised_file"] = f"{'; '.join(unread)} (the report names them)"
    atomic.write_json(summary.report, shown_in({"input": str(cfg.input), "output": str(cfg.output),
                                                "config": asdict(cfg), **asdict(summary)}))  # a detail may name a file
    return summary


def unread_kinds(bad: list[dict]) -> dict[str, int]:
    """How many of the files skipped as unrecognised are of a kind users bring by mistake, by what to do of them."""
    files = [item["source"] for item in bad if item["reason"] == "unrecognised_file"]
    return {"compressed tars, which megadalle does not read: decompress them": sum(map(is_compressed_tar, files)),
            "HEIC photos, which PIL does not read: convert them to JPEG": sum(
                Path(name).suffix.lower() in UNREAD_PHOTOS for name in files)}


def run(cfg: DictConfig) -> int:
    """`megadalle prepare input=DIR output=DIR image_size=256 ...`; NoUsableInput if nothing was usable, exit code
    130 if interrupted, STOPPED_EXIT if a signal stopped it (interrupted.py)."""
    from megadalle.config import build, top_level
    from megadalle.interrupted import how, stop_status

    pc = build(PrepareConfig, top_level(cfg, PrepareConfig), "")
    try:
        summary = prepare(pc)
    except KeyboardInterrupt as interrupted:  # the writers have cleaned up already (prepare aborts them)
        print(f"megadalle prepare: {how(interrupted)}; rerun to rebuild {pc.output} (it has no index.json, so no "
              f"reader takes it for finished)", file=sys.stderr, flush=True)
        return stop_status(interrupted)
    print(summary.text(), flush=True)
    if not summary.kept:
        raise NoUsableInput(f"input={str(pc.input)!r}", summary)
    if pc.val_fraction and not summary.val_kept:  # said only by a training run's "no validation data", much later
        warn(f"val_fraction={pc.val_fraction} held out none of the {summary.kept} samples (a sample's side is set by "
             "its image's bytes), so there is no val/ split: raise val_fraction, or give training data.val_shards")
    if summary.kept == summary.val_kept:  # the readers then took the output for an unfinished one, `index` for no shards
        why = (f"val_fraction={pc.val_fraction}, and a sample's side is set by its image's bytes" if pc.val_fraction
               else "the input's own validation split holds them all")
        raise UserError(f"output={str(pc.output)!r}: every one of the {summary.kept} samples kept is a validation "
                        f"sample ({why}), so no training shard was written: lower val_fraction or give more data")
    return 0
