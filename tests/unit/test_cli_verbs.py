"""What `megadalle` says and returns when the verb is missing, mistyped, or given a value its key cannot hold.

Exit codes are what scripts read: a bare `megadalle` did not do what was asked (2, as argparse does for a usage
error), `--help` did (0).
"""
import pytest

from megadalle.cli import main

USAGE = "usage: megadalle <verb>"


def test_no_verb_prints_the_usage_and_fails(capsys):
    assert main([]) == 2
    assert USAGE in capsys.readouterr().out


@pytest.mark.parametrize("asked", ["--help", "-h", "help"])
def test_asking_for_help_prints_the_usage_and_succeeds(asked, capsys):
    assert main([asked]) == 0
    assert USAGE in capsys.readouterr().out


def test_a_mistyped_verb_is_refused_with_the_verb_it_likely_meant(capsys):
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "megadalle: unknown verb 'trian'; did you mean train?"
    assert main(["xyzzy"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "megadalle: unknown verb 'xyzzy'."


def test_a_value_the_key_cannot_hold_names_the_override_and_omegaconfs_cause(capsys):
    """OmegaConf's cause is the part that says what is wrong with `abc`; hydra's own line only names the override."""
    assert main(["plan", "model.n_layers=abc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("megadalle plan: "), err
    assert "model.n_layers=abc" in err and "could not be converted to Integer" in err, err
