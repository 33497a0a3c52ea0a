"""Tokenizer from Python: a file it cannot read is named, one str is no batch, a negative text_len no length
(hunt P8)."""
from __future__ import annotations

import pytest

from megadalle.data.tokenizer import Tokenizer, TokenizerError


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    missing = tmp_path / "no" / "tok.model"
    with pytest.raises(TokenizerError, match=rf"^{missing}: cannot be read \(No such file or directory\)$") as err:
        Tokenizer(missing)
    assert err.value.reason == "cannot be read (No such file or directory)"  # for the callers that name the key


def test_one_str_is_no_batch_and_a_negative_text_len_no_length(tokenizer):
    """encode_batch("a red circle", 16) gave a row per character; encode(text, -3) gave two ids."""
    with pytest.raises(TypeError, match=r"^texts='a red cat': expected a list of captions, got one str"):
        tokenizer.encode_batch("a red cat", 16)
    with pytest.raises(ValueError, match=r"^text_len=-3: must be >= 0$"):
        tokenizer.encode("a red cat", -3)
    assert tokenizer.encode_batch(["a red cat"], 16).shape == (1, 16) and len(tokenizer.encode("a red cat", 0)) == 0
