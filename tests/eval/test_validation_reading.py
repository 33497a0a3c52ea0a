"""Validation scores the captions as written: no BPE dropout, whatever data.bpe_dropout trains with.

Dropout is a training regulariser (the paper's 10%); a val/loss of dropped segmentations would score tokenizations
the model never sees at sampling time, and vary with the dropout a run chose, so runs of a sweep over
data.bpe_dropout could not be compared (train/task.validation_data). These tests read the Transformer task's
validation batches of a run with data.bpe_dropout=0.5 and compare them with each sample's caption tokenized by hand
without dropout.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from megadalle.config.compose import compose
from megadalle.data.loader import token_loader
from megadalle.data.tokenizer import Tokenizer, iter_captions
from megadalle.train.task import DataPart
from megadalle.train.transformer import task_from_config

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from dist_tokens import make_token_data  # noqa: E402

VAL_SAMPLES, MICRO = 16, 4


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    shards, tok = make_token_data(root / "train")
    val, _ = make_token_data(root / "val", samples=VAL_SAMPLES)
    return shards, tok, val


def validation_rows(token_data, dropout: float) -> dict[int, list[int]]:
    """Each validation sample's token row, as a `train` run with data.bpe_dropout=`dropout` validates it."""
    shards, tok, val = token_data
    cfg = compose("train", [f"data.shards={shards}", f"data.tokenizer={tok}", f"data.val_shards={val}",
                            f"data.bpe_dropout={dropout}", "data.num_workers=0", "model=tiny"])
    stream = task_from_config(cfg).validation_batches(DataPart(MICRO, 1, 0, 1))
    batches = list(itertools.islice(stream, VAL_SAMPLES // MICRO))  # the whole split, each sample once
    return {int(s): row for b in batches for s, row in zip(b["sample"], b["text"].tolist())}


def test_validation_reads_undropped_tokens_whatever_the_training_dropout(token_data):
    _, tok, val = token_data
    text_len = compose("train", ["model=tiny"]).model.text_len
    tokenizer = Tokenizer(tok)
    undropped = [tokenizer.encode(caption, text_len) for caption in iter_captions(val)]  # one line per sample
    read = validation_rows(token_data, 0.5)
    assert sorted(read) == list(range(VAL_SAMPLES))
    assert read == {s: undropped[s] for s in read}
    dropped = token_loader(val, MICRO, tokenizer, text_len, bpe_dropout=0.5)  # what dropout would have read
    rows = {int(s): row for b in itertools.islice(iter(dropped), VAL_SAMPLES // MICRO)
            for s, row in zip(b["sample"], b["text"].tolist())}
    assert any(rows[s] != undropped[s] for s in rows), "dropout 0.5 changes none of these captions: no test"
