"""A tiny training command line and the check that a command is refused before any process group starts.

A helper, not a test module: every test of a refusal made up front (tests/cli/test_preflight*.py and the verbs'
own) asserts the same shape, and none of those test modules should be another's library.
"""
import torch

from megadalle.cli import main

TINY = ["model=tiny", "trainer=tiny", "logger=none", "data.num_workers=0"]


def fails(capsys, argv, expected):
    """`argv` exits 2 with one line on stderr holding `expected`, and no process group was started; returns it."""
    started = torch.distributed.is_initialized()  # an earlier in-process training test may have started one
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert torch.distributed.is_initialized() == started
    return err
