"""What a command line's overrides do, as a user meets it: the advice a refused value gets (taken back through the
shell and composed, it must give what was meant), and the text a text key keeps."""
import shlex

from megadalle.cli import main
from megadalle.config.compose import compose


def advice(capsys, argv) -> str:
    """The one line a refused command line prints."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_bracketed_value_hydra_cannot_read_is_advised_as_text_and_as_the_list_it_reads(capsys):
    """`demo.dvae_overrides=[trainer.lr=1e-3,trainer.steps=5 ]`: hydra cannot read `=` inside a list. The advice
    offers the value quoted whole (one string, which a list setting refuses) and each item quoted (the list meant)."""
    typed = "demo.dvae_overrides=[trainer.lr=1e-3,trainer.steps=5 ]"
    err = advice(capsys, ["demo", typed])
    assert err.startswith(f"megadalle demo: {typed}: hydra cannot read this value (")
    as_text, _, as_list = err.rstrip("\n").partition("; quote it: ")[2].partition(" (as text), or ")
    assert as_list.endswith(" (as a list)"), err
    assert shlex.split(as_text) == ["demo.dvae_overrides=\"[trainer.lr=1e-3,trainer.steps=5 ]\""]
    [given] = shlex.split(as_list.removesuffix(" (as a list)"))
    assert list(compose("demo", [given]).demo.dvae_overrides) == ["trainer.lr=1e-3", "trainer.steps=5"]


def test_words_without_a_key_name_the_first_of_them_where_the_verb_has_no_likely_key(capsys):
    """`megadalle plan gpus 8`: `gpus` is the word that wanted `=`; the words after it are not one value."""
    assert advice(capsys, ["plan", "gpus", "8"]) == \
        "megadalle plan: gpus: expected key=value (megadalle plan --help lists the keys)\n"


def test_an_empty_quoted_prompt_before_the_words_adds_no_quotes_to_the_prompt_advised(capsys):
    """`prompt="" red circle` (the shell kept the inner quotes of `'prompt=""'`): the prompt meant is `red circle`."""
    err = advice(capsys, ["generate", "weights=m", 'prompt=""', "red", "circle"])
    assert err.endswith("; for the prompt, write 'prompt=\"red circle\"'\n")
    [given] = shlex.split(err.rstrip("\n").rpartition(", write ")[2])
    assert compose("generate", ["weights=m", given]).prompt == "red circle"


def test_a_group_name_below_another_key_is_no_group_of_other_verbs(capsys):
    """`trainer.model=1`: `model` is a config group of other verbs only at the top level; below `trainer` it is a
    misspelt trainer key, said without naming those verbs."""
    assert advice(capsys, ["plan", "trainer.model=1"]) == ("megadalle plan: trainer.model=1: megadalle plan has no key "
                                                          "trainer.model (megadalle plan --help lists the keys)\n")


def test_a_text_key_keeps_a_numbers_text_without_the_spaces_around_it_as_hydra_drops_them_from_text():
    """`'prompt= 3.10 '`: the text kept is `3.10` (not hydra's 3.1), trimmed as hydra trims `'prompt= abc '`."""
    assert compose("generate", ["weights=m", "prompt= abc "]).prompt == "abc"
    assert compose("generate", ["weights=m", "prompt= 3.10 "]).prompt == "3.10"


def test_a_key_too_short_to_be_near_any_is_answered_with_the_key_it_starts(capsys):
    """`media=4`, `trainer.keep=1`: no declared key is near in spelling, but one starts with the name and `_`."""
    assert advice(capsys, ["train", "media=4"]) == ("megadalle train: media=4: megadalle train has no key media; "
                                                    "did you mean media_captions? (megadalle train --help lists the "
                                                    "keys)\n")
    assert "has no key trainer.keep; did you mean trainer.keep_checkpoints? " in advice(capsys, ["train",
                                                                                             "trainer.keep=1"])
