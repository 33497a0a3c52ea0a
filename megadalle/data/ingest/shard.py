"""One tar written elsewhere, walked once with every sample checked: the kept samples' spans and the skipped.

Two samples of one key one after the other (their members run together, so neither can be told from the other) are
both skipped; a key that comes back later in the tar keeps its first sample and skips the later one. A tar cut
short keeps the samples before the cut: the last one too unless the cut may have taken some of its members. Runs in a
worker process per shard; the tar is never rewritten. The report holds keys as text (`names.shown`): a key that is
not UTF-8 stopped the report's writing.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from megadalle.data.ingest.sample_check import check_sample
from megadalle.data.names import shown
from megadalle.data.reuse import TarFindings
from megadalle.data.tar import members_end, walk


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


def index_shard(path: Path, require: Sequence[str], require_media: bool, decode: bool = True,
                min_side: int = 0) -> ShardResult:
    """Walk one tar, checking every sample (runs in a worker process)."""
    spans, fields, skipped, warnings, sizes, seen = [], set(), [], [], set(), set()

    def skip(key: str, reason: str, detail: str) -> None:
        skipped.append({"shard": path.name, "key": shown(key), "reason": reason, "detail": shown(detail)})

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
                check = check_sample(sample, require, require_media, decode, min_side)
                if check.reason:
                    skip(sample.key, check.reason, check.detail)
                    continue
                warnings += [{"shard": path.name, "key": shown(sample.key), "reason": reason, "detail": shown(detail)}
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
