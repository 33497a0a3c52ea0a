"""The overrides of a multi-node `launch/train.sh`, written so that every node's megadalle gets them as typed.

DeepSpeed's pdsh runner (0.19.8, multinode_runner.PDSHRunner.parse_user_args) joins the arguments into one command
line that each node's shell reads again: an argument holding a space goes in double quotes (its `"` escaped), any
other bare. That shell expanded the README's own `out_dir=${oc.env:SCRATCH}/runs` ("bad substitution" on every
node), took backslashes and quotes away and split `{a,b}`. `for_pdsh` writes each argument so that DeepSpeed's
quoting and then that shell give it back whole; train.sh runs this module on its arguments for a multi-node run
(`python -m megadalle.remote_args ARG...` prints them so written, each ended by a NUL).
"""
from __future__ import annotations

import re
import shlex
import sys


def for_pdsh(arg: str) -> str:
    """`arg` as it must reach DeepSpeed's pdsh runner for the nodes' shell to read it back unchanged."""
    if " " not in arg:
        return shlex.quote(arg)  # passed bare: the shell takes exactly these quotes away
    return re.sub(r"([$`\\])", r"\\\1", arg)  # in DeepSpeed's double quotes only these (and its escaped `"`) act


if __name__ == "__main__":
    sys.stdout.write("".join(f"{for_pdsh(arg)}\0" for arg in sys.argv[1:]))
