"""A command-line value holding a newline or a tab (`"prompt=$(cat p.txt)"`): hydra cannot read it unquoted, and
the refusal is one line, with its reason and a fix that works as given (bash's $'...' form)."""
import subprocess

import pytest

from megadalle.cli import main
from megadalle.config.compose import compose


def as_bash_reads(word: str) -> str:
    """The one argument bash makes of `word`."""
    args = subprocess.run(["bash", "-c", f"printf '%s\\0' {word}"], capture_output=True, check=True).stdout.decode()
    assert args.count("\0") == 1, args
    return args[:-1]


@pytest.mark.parametrize("prompt", ["a red circle\nat the top left", "a red\tcircle\n", "it's a\r\nback\\slash",
                                    "a para\u2028graph\x0cof \u00e9 and \U0001F600"])
def test_a_value_with_a_newline_is_refused_in_one_line_with_a_fix_that_works(prompt, capsys):
    assert main(["generate", "weights=model", f"prompt={prompt}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # the CLI shows a refusal's first line: all of it is there
    assert "hydra cannot read this value" in err and "quote it: " in err
    suggested = as_bash_reads(err.split("quote it: ")[1].strip())
    assert compose("generate", ["weights=model", suggested]).prompt == prompt


def test_a_printable_text_keeps_shlex_quoting():
    from megadalle.config.override import shell_word

    assert shell_word("prompt=\"a cat's mat\"") == "'prompt=\"a cat'\"'\"'s mat\"'"
    assert as_bash_reads(shell_word("a\nb")) == "a\nb"


def test_a_word_without_a_key_holding_a_newline_is_said_in_one_line(capsys):
    assert main(["generate", "weights=model", "a red circle\nat the top left"]) == 2
    err = capsys.readouterr().err
    assert err == ("megadalle generate: $'a red circle\\nat the top left': expected key=value; for the prompt, write "
                   "$'prompt=\"a red circle\\nat the top left\"'\n")


def test_a_quoted_prompt_with_quotes_inside_is_advised_quoted_once(capsys):
    """`prompt="a "red" circle"` was advised as `prompt="\\"a \\"red\\" circle\\""`, which drew the prompt with its outer
    quotes: the advice quotes the text inside them, as for `prompt=a "red" circle`."""
    from megadalle.cli import main

    for typed in ('prompt="a "red" circle"', 'prompt=a "red" circle'):
        assert main(["generate", "weights=x", typed]) == 2
        err = capsys.readouterr().err
        assert err.endswith("""quote it: 'prompt="a \\"red\\" circle"'\n"""), err
