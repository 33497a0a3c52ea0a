"""The prompt checks read plain ids only: sentencepiece 0.2.0 returns its proto as bytes (`.pieces` failed
there, and generate, evaluate and the demo with it), and later versions need protobuf to parse it."""
from types import SimpleNamespace

import pytest

from megadalle.config import ConfigError
from megadalle.data.tokenizer import Tokenizer
from megadalle.sampling.prompt import check_prompt, warn_if_unknown
from tests.tiny_models import write_tiny_models


class PlainIds:
    """A sentencepiece processor that answers plain id requests alone."""

    def __init__(self, sp):
        self.sp = sp

    def encode(self, text, **options):
        assert not options, options
        return self.sp.encode(text)

    def unk_id(self):
        return self.sp.unk_id()


def test_the_prompt_checks_need_nothing_but_ids(tmp_path, capsys):
    write_tiny_models(tmp_path)
    tokenizer = SimpleNamespace(sp=PlainIds(Tokenizer(tmp_path / "tokenizer.model").sp))
    check_prompt(tokenizer, "a red circle")
    with pytest.raises(ConfigError, match="reads nothing of it"):
        check_prompt(tokenizer, "\u200b")
    for prompt, said in (("", "prompt='': empty; give words"), ("  ", "prompt='  ': blank; give words")):
        with pytest.raises(ConfigError, match=f"^{said}$"):  # it said "(it drops ); give words", naming nothing
            check_prompt(tokenizer, prompt)
    warn_if_unknown(tokenizer, "ÄÖÜ Äa")
    assert "4 of 5 characters are unknown" in capsys.readouterr().err
