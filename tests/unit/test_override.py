"""megadalle writes an override one way (megadalle.config.override), read back by hydra's own parser as the value
written: plan's launch line wrote a backslash doubled inside quotes (hydra keeps it) and `2024` bare (an int)."""
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from megadalle.config.override import override_value, override_word

AWKWARD_TEXTS = ["plain", "a b", " lead", "trail ", "a,b", "a=b", "k:v", "[a]", "a]", "{k:v}", "(x)", "it's",
                 'say "hi"', '"', "ends\\", 'ends\\"', "a\\b", "\u00e9t\u00e9", "2024", "1e3", "true", "null", "",
                 "~x", "+x", "@x", "$x", "${x}", "\\${x}", "a\\\\${x}", "${x}${y}", "* ?", "#c", "a\tb"]


def read_back(key: str, written: str):
    """What `key=written` sets: hydra's parse of it, then OmegaConf's reading of each `${` and its escapes."""
    parsed = OverridesParser.create().parse_override(f"{key}={written}")
    assert not parsed.is_sweep_override(), written
    return OmegaConf.to_container(OmegaConf.create({key: parsed.value()}), resolve=True)[key]


@pytest.mark.parametrize("value", [*AWKWARD_TEXTS, None, True, False, 3, -2, 1.5, 1e-5, [], ["a b", "a,b", 2, None],
                                   AWKWARD_TEXTS, {"stage": 3, "name": "a,b c", "on": True, "path": "it's\\"},
                                   {"nested": {"list": ["[x]", "${x}"]}}])
def test_an_awkward_value_reads_back_as_itself(value):
    assert read_back("key", override_value(value)) == value


@pytest.mark.parametrize("text", ["a,b", "a b", "${x}", "it's", "a\nb"])
def test_an_override_word_is_one_shell_word_that_reads_back(text):
    words = shlex.split(override_word("prompt", text).replace("$'", "'").replace("\\n", "\n"))  # bash's $'...'
    assert len(words) == 1 and read_back("prompt", words[0].partition("=")[2]) == text


def test_a_plain_value_is_written_bare():
    assert [override_value(v) for v in ("tiny", "/data/shards", None, True, 4, [1, 2], {"a": 1})] == \
        ["tiny", "/data/shards", "null", "true", "4", "[1,2]", "{a:1}"]
