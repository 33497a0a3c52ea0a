"""A message that names a value holding a character that does not print writes it as bash's $'...' word, and a
user pastes that word back into a shell: bash must give back the value's own characters. Bash reads `\\xHH` as
one byte, which is the character only below 0x80; a C1 control (U+0085) written `\\x85` came back as a lone,
invalid UTF-8 byte instead of the character, so the pasted command asked for a different value."""
import os
import subprocess

import pytest

from megadalle.config.override import shell_word

NOT_PRINTING = ["\x01", "\x1b", "\x7f", "\x80", "\x85", "\x90", "\x9f", "\xad", "\u2028", "\u200b", "\ufeff",
                "\U000e0001"]


def bash_reads(*words: str) -> list[bytes]:
    """The bytes bash makes of each shell word, in a UTF-8 locale (where $'\\uHHHH' is the character's UTF-8)."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    script = "printf '%s\\0' " + " ".join(words)
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=True).stdout.split(b"\0")[:-1]


def test_every_character_that_does_not_print_reads_back_from_one_bash_word():
    """One bash run for all: each character between letters, and one beside a quote, a backslash and \\n \\t \\r."""
    texts = [f"k=a{c}b" for c in NOT_PRINTING] + ["\x85'\\\n\t\r\u2028"]
    words = [shell_word(text) for text in texts]
    assert all(not text.isprintable() and word.startswith("$'") for text, word in zip(texts, words))
    assert bash_reads(*words) == [text.encode() for text in texts]


@pytest.mark.parametrize("char", ["\x85", "\x7f", "\u2028"])
def test_a_character_is_escaped_by_its_code_point_not_as_a_byte(char):
    """The escape names the character (\\xHH only for ASCII; \\uHHHH above): U+0085's UTF-8 is two bytes."""
    word = shell_word(char)
    assert bash_reads(word) == [char.encode("utf-8")]
    assert ("\\x" in word) == (ord(char) < 0x80)
