"""The data path end to end, as the stages use it: prepare -> tokenizer -> (encode's read and write) -> token batches."""
from __future__ import annotations

import numpy as np

from megadalle.config.data import PrepareConfig
from megadalle.data.loader import image_loader, token_loader
from megadalle.data.prepare import prepare
from megadalle.data.shards import ShardIndex, ShardWriter
from megadalle.data.tokenizer import train_tokenizer
from tests.data.conftest import WORDS, jpeg_bytes


def test_prepare_tokenize_encode_load(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes((40, 32), i))
        (folder / f"{i:02d}.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 5)) for _ in range(2)))
    prepare(PrepareConfig(input=str(folder), output=str(tmp_path / "images"), image_size=16, min_side=16,
                          shard_max_samples=5, num_workers=0), progress=False)
    tok = train_tokenizer(tmp_path / "images", tmp_path / "tok.model", vocab_size=60)

    # what `encode` does: one ordered pass over the image shards, codes written with the caption field
    with ShardWriter(tmp_path / "tokens", max_count=5, meta={"grid_size": 2}) as writer:
        for batch in image_loader(tmp_path / "images", 4, 16, shuffle=False, epochs=1, rank=0, world_size=1):
            codes = (batch["image"].mean(dim=(1, 2, 3)) * 100).long()  # stands in for the dVAE's argmax
            for key, txt, code in zip(batch["key"], batch["txt"], codes):
                writer.write({"__key__": key, "codes.npy": np.full((2, 2), int(code), np.uint16), "txt": txt})
    assert ShardIndex.load(tmp_path / "tokens").total == 12

    batch = next(iter(token_loader(tmp_path / "tokens", 6, tok, text_len=12, bpe_dropout=0.1, rank=0, world_size=1)))
    assert batch["text"].shape == (6, 12) and batch["image"].shape == (6, 4)
    captions = {line for p in folder.glob("*.txt") for line in p.read_text().splitlines()}
    assert all(any(c.startswith(tok.decode(row)) for c in captions) for row in batch["text"])  # truncated to 12 ids
