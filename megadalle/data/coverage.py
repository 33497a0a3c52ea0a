"""Does an index still cover its folder? What `megadalle index` records of the tars it read, and the comparison.

A folder of tars written elsewhere keeps changing after it is indexed: img2dataset is still downloading
and adds `00002.tar`, `00003.tar`, or rewrites a tar it had cut short. An index that is simply reused
then reads half the data set without a word. So indexing records every `*.tar` it found, by name, size
and mtime_ns (the tars it skipped as unusable too), with what it found in each (`reuse.py`: indexing again
reads only the tars that differ), and `ingest.open_index` compares that record with the folder each time it
opens one, by name and size: any difference means indexing again (or a refusal, where the folder is read-only). The
mtime is recorded, not compared: a copy (`cp` without -p, a tar round trip that keeps whole seconds, an object-store
sync) changes it on an unchanged data set, which was then decoded again in full, or refused on a read-only mount.

megadalle's own outputs (`prepare`, `encode`) carry no record: their writer lists every shard it wrote, whole. They
are compared with that list all the same, and a difference is refused (`OutputChanged`), never indexed again:
a tar copied in beside the shards was otherwise left out without a word, and indexing the folder as one written
elsewhere would drop its meta (encode's grid and codebook sizes, which training checks the model against) and
check token shards for images they do not hold. The writer that made it rebuilds it whole, once the tars it did
not write are moved out (it refuses to write beside them, `output_guard.py`). `megadalle index` run by
hand on one is refused too (`refuse_own_output`), changed or not.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING

from megadalle.config.override import override_word
from megadalle.config.data import VAL_DIR, PrepareConfig
from megadalle.config.dvae import EncodeConfig
from megadalle.data.index import (INDEX_NAME, REPORT_NAME, ShardIndex, ShardsNotFound, load_offsets, offsets_path,
                                  to_spans)
from megadalle.data.verb_outputs import writer_of, writes
from megadalle.errors import UserError

INDEXED_BY = "megadalle index"
"""index.json's meta.indexed_by of a folder `megadalle index` wrote: one indexed before the record existed
is told from megadalle's own outputs by it."""
SHOWN = 5
"""Names listed per kind of change; the rest are counted."""
WRITER_CONFIGS = {"prepare": PrepareConfig, "encode": EncodeConfig}
"""The keys of each writer of megadalle outputs (`writer_of`), and their defaults, for the command that rebuilds one."""


def tar_stats(root: Path) -> list[dict[str, Any]]:
    """Name, size and mtime_ns of every `*.tar` in `root`, sorted by name (a tar removed meanwhile is left out)."""
    stats = []
    for path in sorted(root.glob("*.tar")):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        stats.append({"name": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return stats


@dataclass
class Changes:
    """How the tars of a folder differ from those its index covers (false when they do not)."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    """Tars the index lists whose offset file (`.tar.idx`) is gone: `cp *.tar index.json` to a node's disk. Readers
    then scanned the whole tar, the samples indexing left out (too small, undecodable, duplicated) among them."""

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.gone or self.unindexed)

    def __str__(self) -> str:
        kinds = (("new", self.new), ("changed", self.changed), ("gone", self.gone),
                 ("without their .tar.idx", self.unindexed))
        return "; ".join(f"{kind}: {shown_names(names)}" for kind, names in kinds if names)


def shown_names(names: list[str]) -> str:
    """The first SHOWN of `names`, and how many more."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


class OutputChanged(ShardsNotFound):
    """A `prepare` or `encode` output whose tars are no longer those its index.json lists."""


class IndexedOutput(UserError, ValueError):
    """`megadalle index` on a finished `prepare` or `encode` output, as written: there is nothing to index."""


def own_output(index: ShardIndex) -> bool:
    """Whether `index` is the one a `prepare` or `encode` wrote with its shards (no record of the tars, and not
    `megadalle index`'s)."""
    return index.indexing is None and index.meta.get("indexed_by") != INDEXED_BY


def changes(index: ShardIndex) -> Changes:
    """How the folder's tars differ from what `index` covers (indexing it again makes them agree). A megadalle
    output that differs is refused instead (`OutputChanged`): only its writer can make it whole again."""
    if index.indexing is not None:
        return _recorded_changes(index)
    if not own_output(index):
        return _unrecorded_changes(index)
    if found := _output_changes(index):
        raise OutputChanged(f"{index.root}: its tars are not those its {INDEX_NAME} lists ({found}); "
                            f"{_rebuild(index, found)}")
    return Changes()


def refuse_own_output(root: Path) -> None:
    """Stop `megadalle index` run by hand on a finished `prepare` or `encode` output: indexing it as a folder written
    elsewhere would drop its meta. Changed, it is refused as readers refuse it (`OutputChanged`); as written, it
    needs nothing (`IndexedOutput`). A folder without a readable index.json is left to indexing."""
    index = ShardIndex.readable(root)
    if index is None or not own_output(index):
        return
    changes(index)
    writer = writer_of(index)
    verb = writer or "prepare or encode"
    rebuild = f"rerun `{_rebuild_command(index)}`" if writer else "rerun the prepare or encode that wrote it"
    raise IndexedOutput(f"{root} is a finished megadalle {verb} output, indexed by its writer ({INDEX_NAME} with "
                        f"its meta{_meta_names(index)}): it needs no `megadalle index`, which would index it as tars "
                        f"written elsewhere and drop that meta; to rebuild it, {rebuild}")


def _meta_names(index: ShardIndex) -> str:
    shown = [key for key in ("grid_size", "vocab_size", "image_size", "format") if key in index.meta]
    return f": {', '.join(shown)}" if shown else ""


def _output_changes(index: ShardIndex) -> Changes:
    """A megadalle output's tars against its index: every listed shard at its size, and no other `*.tar` in the
    folders that hold them (a hidden name is a writer's staging, not a shard)."""
    listed = {s.name: s.bytes for s in index.shards}
    folders = {index.root} | {(index.root / name).parent for name in listed}
    found = {path.relative_to(index.root).as_posix(): path for folder in folders for path in folder.glob("*.tar")
             if not path.name.startswith(".") and path.is_file()}
    sizes = {name: (index.root / name).stat().st_size for name in listed if (index.root / name).is_file()}
    return Changes(new=sorted(found.keys() - listed.keys()), gone=sorted(listed.keys() - sizes.keys()),
                   changed=sorted(name for name, size in sizes.items() if size != listed[name]))


def _rebuild(index: ShardIndex, found: Changes) -> str:
    """What makes a changed megadalle output whole again: moving out the new tars its writer did not write (it
    refuses to write beside them: `output_guard.py`), and its writer rerun from its input into it where a listed
    shard is gone or changed, or a new tar of its own is there (the rerun removes it)."""
    verb = writer_of(index)
    if verb is None:
        return "a megadalle output is written whole: rerun the prepare or encode that wrote it, or move the tars " \
               "it does not list out of it"
    rebuild = f"rebuild it with `{_rebuild_command(index)}` (not `megadalle index`, which would drop its meta)"
    strays = [name for name in found.new if not writes(verb, index.root, name)]
    if not strays:
        return f"a megadalle output is written whole: {rebuild}, or move the tars it does not list out of it"
    move = f"move {shown_names(strays)} out of it ({verb} did not write {'them' if len(strays) > 1 else 'it'})"
    if len(strays) == len(found.new) and not found.gone and not found.changed:
        return f"{move}: the shards it lists are there as {verb} wrote them"
    return f"a megadalle output is written whole: {move}, then {rebuild}"


def _rebuild_command(index: ShardIndex) -> str:
    """The command line of `writer_of` that rebuilds the output whole, as it was made (a validation split,
    `<output>/val/`, is rebuilt with the output that holds it). A split says so in its meta ("split"); only an
    index older than the recorded settings is taken for one by its source's name, since a `val/` encoded on purpose
    from another input's split has that name too."""
    verb, output, source = writer_of(index), index.root, Path(index.meta.get("source", "..."))
    carried = index.meta.get("split") == VAL_DIR or ("settings" not in index.meta and source.name == VAL_DIR)
    if output.name == VAL_DIR and carried:
        output, source = output.parent, source.parent if source.name == VAL_DIR else source
    words = [override_word("input", str(source)), override_word("output", str(output)), *_settings(verb, index.meta)]
    return f"megadalle {verb} {' '.join(words)}"


def _settings(verb: str, meta: dict) -> list[str]:
    """The overrides besides input and output that rebuild what `verb` wrote: each setting its meta records
    ("settings"; an older prepare's meta its image_size and format only) that is not the verb's default, and
    `KEY=...` for a required one it does not record (an older encode's dvae_weights)."""
    recorded = meta.get("settings") or {key: meta[key] for key in ("image_size", "format") if key in meta}
    words = []
    for setting in fields(WRITER_CONFIGS[verb]):
        if setting.name in ("input", "output"):
            continue
        if setting.name in recorded and recorded[setting.name] != setting.default:
            words.append(override_word(setting.name, recorded[setting.name]))
        elif setting.name not in recorded and setting.default == MISSING:
            words.append(f"{setting.name}=...")
    return words


def _recorded_changes(index: ShardIndex) -> Changes:
    now = {s["name"]: s for s in tar_stats(index.root)}
    before = {s["name"]: s for s in index.indexing["tars"]}
    changed = sorted(name for name in now.keys() & before.keys()
                     if now[name]["bytes"] != before[name]["bytes"] or rewritten(index.root, now[name], before[name]))
    return Changes(new=sorted(now.keys() - before.keys()), gone=sorted(before.keys() - now.keys()), changed=changed,
                   unindexed=_unindexed(index, {*changed, *(before.keys() - now.keys())}))


HEADERS_CHECKED = 3
"""Sample starts of a touched tar `rewritten` reads a tar header at: its first, middle and last (samples written
otherwise shift every later offset), few, as a copied folder's tars are all touched and checked at each opening."""


def rewritten(root: Path, now: dict[str, Any], before: dict[str, Any]) -> bool:
    """Whether a tar of `root` at its indexed size (`tar_stats` entries `now` and `before`) holds other samples than
    its offsets say: touched since (another mtime) and without a tar header where one of HEADERS_CHECKED samples
    begins. Python's tarfile and GNU tar pad every archive to 10 KiB, so a tar downloaded again with a few other samples
    keeps its size: its stale offsets were trusted, and readers died with tarfile's "unexpected end of data"
    traceback. A plain copy (another mtime, the same bytes) passes, in HEADERS_CHECKED reads of 512 bytes. (Other
    samples laid out as the old ones were are read as they are now.)"""
    if now.get("mtime_ns") == before.get("mtime_ns"):
        return False
    path = root / now["name"]
    try:
        starts = to_spans(load_offsets(path))[:, 0] if offsets_path(path).is_file() else np.zeros(0, np.int64)
        with open(path, "rb") as f:
            picks = np.unique(np.linspace(0, len(starts) - 1, HEADERS_CHECKED).astype(int)) if len(starts) else []
            for start in starts[picks]:
                f.seek(int(start))
                tarfile.TarInfo.frombuf(f.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
    except (OSError, ValueError, tarfile.HeaderError):
        return True
    return False


def _unindexed(index: ShardIndex, other: set[str]) -> list[str]:
    """The tars `index` lists with samples, as they were when indexed, whose offset file is gone (`Changes`)."""
    return sorted(s.name for s in index.shards if s.count > 0 and s.name not in other
                  and (index.root / s.name).is_file() and not offsets_path(index.root / s.name).is_file())


def _unrecorded_changes(index: ShardIndex) -> Changes:
    """An index written before indexing recorded its tars: the tars it lists must be there at their size, and no
    other `*.tar` may be there but those its report (index-report.json beside it) names, which indexing read and
    found no usable sample in. Sizes alone cannot tell a tar rewritten in place; the next indexing records more."""
    found, unusable = {s["name"] for s in tar_stats(index.root)}, _reported_tars(index.root)
    listed = {s.name: s.bytes for s in index.shards}
    sizes = {name: (index.root / name).stat().st_size for name in listed if (index.root / name).is_file()}
    changed, gone = sorted(name for name, size in sizes.items() if size != listed[name]), listed.keys() - sizes.keys()
    return Changes(new=sorted(found - listed.keys() - unusable), gone=sorted(gone), changed=changed,
                   unindexed=_unindexed(index, {*changed, *gone}))


def _reported_tars(root: Path) -> set[str]:
    """Shards the index report beside the index names (none when it is missing or unreadable)."""
    try:
        return {bad["shard"] for bad in json.loads((root / REPORT_NAME).read_text())["bad"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
