"""generate warns when *most* of a prompt's characters (spaces aside) are unknown to the tokenizer: a prompt
half of known words still tells the model something, and a warning on it would be noise that teaches users to
ignore the one that matters."""
from types import SimpleNamespace

import pytest

from megadalle.sampling.prompt import warn_if_unknown


class AsciiPieces:
    """A sentencepiece stand-in that knows ASCII letters alone: every other character reads as unknown (id 1)."""

    def encode(self, text):
        return [ord(c) if c.isascii() else 1 for c in text]

    def unk_id(self):
        return 1


TOKENIZER = SimpleNamespace(sp=AsciiPieces())


@pytest.mark.parametrize("prompt, unread, total", [("Äa", 1, 2), ("ÄÖ ab", 2, 4), ("Ä Ö Ü abc", 3, 6)])
def test_exactly_half_unknown_is_not_warned(prompt, unread, total, capsys):
    chars = "".join(prompt.split())
    assert sum(not c.isascii() for c in chars) == unread and len(chars) == total and 2 * unread == total
    warn_if_unknown(TOKENIZER, prompt)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("prompt, unread, total", [("Ää", 2, 2), ("ÄÖÜ ab", 3, 5), ("Ä Ö Ü Ä abc", 4, 7)])
def test_one_unknown_past_half_is_warned(prompt, unread, total, capsys):
    warn_if_unknown(TOKENIZER, prompt)
    assert f"{unread} of {total} characters are unknown" in capsys.readouterr().err
