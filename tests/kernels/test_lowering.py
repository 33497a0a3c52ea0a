"""The kernels lower to an sm_90 cubin (Triton + bundled ptxas), checked without a GPU."""
import os
import subprocess
import sys


def test_kernels_compile_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "megadalle.kernels.lowering", "--dtypes", "bf16"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("sm_90 ok") == 3, done.stdout
