"""Tars written elsewhere made readable by megadalle: `megadalle index DIR`, and indexing on first use.

img2dataset's output (`00000.tar` with `<key>.jpg/.txt/.json`, a `.parquet` and `_stats.json` beside)
or a colleague's `TarWriter` shards carry no `index.json` or offset files. Indexing reads every sample
once and keeps those it can train on; the offset files simply leave the others out, so no reader ever
sees them, and the tars are never rewritten. One concept a file:

    sample_check.py  which samples are kept: every field with a safe decoder decoded, pickles never
    shard.py         one tar walked, every sample checked (a worker process's task)
    folder.py        a folder indexed (`index_directory`): offset files, the report, index.json last
    first_use.py     `open_index`, what readers call: indexes a folder on first use, or when its tars changed
    verify.py        what is wrong with an indexed folder now, against its index
    dropped.py       what an indexed folder's index left out, by reason (what `prepare` of it counts as skipped)
    verb.py          `megadalle index DIR`

The names callers use are importable from here.
"""
from megadalle.data.ingest.first_use import open_index
from megadalle.data.ingest.folder import IndexSummary, ReadOnlyShards, index_directory
from megadalle.data.ingest.verb import run
from megadalle.data.ingest.verify import verify

__all__ = ["open_index", "IndexSummary", "ReadOnlyShards", "index_directory", "run", "verify"]
