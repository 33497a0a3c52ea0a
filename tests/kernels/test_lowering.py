"""The kernels lower to sm_90 cubins (Triton + bundled ptxas) as the JIT specialises them, without spills."""
import json
import os
import subprocess
import sys


def test_kernels_compile_for_hopper_without_spills(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "lowering.json"
    done = subprocess.run([sys.executable, "-m", "megadalle.kernels.lowering", "--head-dims", "64", "--masks", "row",
                           "--configs", "first", "--json", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {r["kernel"] for r in rows} == {"forward", "dq", "dkdv"}, done.stdout
    for r in rows:
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        assert 0 < r["registers"] <= 255 and 0 < r["shared"] <= 227 * 1024, r
