"""benchmarks/attention.py runs on a machine without a GPU: tile fractions and the tiny harness check."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention.py"


def _run(tmp_path, *args):
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script must set it itself
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_blocks_only(tmp_path):
    stdout, result = _run(tmp_path, "--blocks-only")
    visited = {(r["mask"], r["block"], r["order"]): r["visited"] for r in result["blocks"]}
    for block in (64, 128):
        assert visited[("column", block, "column-major")] <= 1.1 * visited[("row", block, "raster")]
    assert "column-major" in stdout and "timings" not in result


def test_cpu_check_runs_every_method(tmp_path):
    stdout, result = _run(tmp_path, "--cpu-check", "--masks", "column")
    rows = {r["method"]: r for r in result["timings"]}
    assert set(rows) == {"ours", "flex", "sdpa"}
    assert rows["ours"]["max_err"] < 1e-5 and rows["ours"]["fwd_bwd_ms"] > 0
    assert rows["flex"]["note"] == "flex backward needs a GPU"
    assert "harness check only" in result["device"]
