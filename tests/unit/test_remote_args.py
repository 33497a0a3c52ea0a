"""A multi-node launch/train.sh hands its overrides to every node's shell through DeepSpeed's pdsh runner: each
must come back as typed (the README's `out_dir=${oc.env:SCRATCH}/runs` was "bad substitution" on every node)."""
import argparse
import subprocess

import pytest
from deepspeed.launcher.multinode_runner import PDSHRunner

from megadalle.remote_args import for_pdsh

TYPED = ["out_dir=${oc.env:SCRATCH}/runs", "model=tiny", "name=a b", "name='quoted'", 'name="double"',
         "name=back\\slash", "x={a,b}", "prompt=a red $HOME `date` \"cat\" \\ here", "pattern=[row,column]",
         "semi=a;b&c|d<e>f(g)", "star=*", "tab=a\tb", "it's=1 2", "newline=a\nb"]


@pytest.mark.parametrize("arg", TYPED)
def test_every_override_reaches_the_nodes_shell_as_typed(arg):
    runner = PDSHRunner(argparse.Namespace(user_args=[for_pdsh(arg)], user_script="megadalle", launcher_args=""), "")
    line = " ".join(runner.parse_user_args())  # what DeepSpeed writes into the nodes' command line
    got = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True, text=True, check=True).stdout
    assert got == f"{arg}\0"


def test_the_module_prints_each_written_override_ended_by_a_nul():
    got = subprocess.run(["python", "-m", "megadalle.remote_args", "a b", "c$"], capture_output=True, text=True,
                         check=True).stdout
    assert got == "a b\0'c$'\0"
