"""Data: shards in, batches out. Imports nothing above the config layer.

    prepare.py    `megadalle prepare`: sources.py lists inputs, convert.py turns one into a sample or a skip reason
                  (items.py: one input; manifests.py: a .jsonl / .csv manifest's rows)
    shards.py     ShardWriter (atomic shards + offset files, index.json last); index.py the index; reader.py readers
    ingest/       `megadalle index`: tars written elsewhere indexed (every sample checked); `open_index` for readers
    coverage.py   the tars an index of such a folder covers, and how the folder differs now (indexed again;
                  a prepare/encode output that differs is refused)
    reuse.py      what indexing found in each tar, kept for the next indexing: only new and changed tars are read
    tar.py        the one walk over tar members (sample spans + raw fields) that index, ingest and readers share
    fields.py     encode/decode of fields by name; pickles are never decoded
    tokenizer.py  `megadalle tokenizer` and the Tokenizer (sentencepiece BPE, pad 0 unk 1 bos 2 eos 3)
    digest.py     a file's sha256: what run.json and bundle.json record of the tokenizer, checked by content
    order.py      sample order = f(seed, epoch, position): the basis of exact and elastic resume
    loader.py     step-indexed, rank-aware loaders and their checkpoint state; batches.py builds the batches
"""
