"""benchmarks/attention.py runs on a machine without a GPU: tile fractions and the tiny harness check."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention.py"
VISITED_V1 = {"dense": 0.525, "row": 0.2625, "row_strict": 0.225, "column": 0.225, "conv": 0.33}
"""Tiles visited at block 64 by the 64-row kernel (v1) at the 12b shape; v2 must not visit more."""


def _run(tmp_path, *args):
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script must set it itself
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_blocks_only(tmp_path):
    stdout, result = _run(tmp_path, "--blocks-only")
    rows = {(r["mask"], r["block"], r["order"]): r for r in result["blocks"]}
    for block in (64, 128):
        assert rows[("column", block, "column-major")]["visited"] <= 1.1 * rows[("row", block, "raster")]["visited"]
    for kind, v1 in VISITED_V1.items():
        row = rows[(kind, 64, "column-major" if kind == "column" else "raster")]
        assert row["visited"] <= v1 + 1e-9, kind
        assert row["kv_loads"] < row["visited"], kind  # pairs of query blocks share K/V loads
    assert "column-major" in stdout and "timings" not in result


def test_gpu_sh_cpu_check_runs_every_stage_and_reports(tmp_path):
    """benchmarks/gpu.sh --cpu-check: the whole GPU run at toy sizes (attention, train step, sampling)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(["bash", str(SCRIPT.parent / "gpu.sh"), "--cpu-check", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert {s: st["rc"] for s, st in report["status"].items()} == {"attention": 0, "train_step": 0, "sampling": 0}
    assert report["train_step"]["tokens_per_s"] > 0
    rows = report["sampling"]["rows"]  # bf16 first: the fp32 rows must still run fp32 weights
    assert [(r["dtype"], r["weights_dtype"]) for r in rows] == [("bf16", "bfloat16"), ("fp32", "float32")]
    assert all(r["sparse_tok_s"] > 0 for r in rows)

    attention = report["attention"]
    rows = {(r["mask"], r["method"]): r for r in attention["timings"]}
    assert {m for _, m in rows} == {"ours", "flex", "sdpa_causal", "sdpa_masked"}
    assert rows[("column", "ours")]["max_err"] < 1e-5 and rows[("column", "ours")]["fwd_bwd_ms"] > 0
    assert "max_err" not in rows[("row", "sdpa_causal")]  # another mask: timed, not compared
    assert rows[("conv", "flex")]["note"] == "flex backward needs a GPU"
    totals = {t["method"]: t for t in attention["pattern_12b"]}
    ours = sum(rows[(kind, "ours")]["fwd_bwd_ms"] * n for kind, n in (("row", 47), ("column", 16), ("conv", 1)))
    assert abs(totals["ours"]["fwd_bwd_ms"] - ours) < 1e-6 * ours
    assert totals["flex"]["fwd_bwd_ms"] is None
    assert "harness check only" in attention["device"]
    markdown = (tmp_path / "gpu.md").read_text()
    assert "12b layer pattern" in markdown and "## Training step" in markdown and "## Sampling" in markdown
    assert report["environment"].startswith("python ") and "torch" in report["environment"]
    assert f"environment: {report['environment']}" in markdown


def test_gpu_sh_stops_before_any_stage_when_the_interpreter_cannot_import(tmp_path):
    """An interpreter without torch fails the preflight in seconds, naming itself, instead of failing every stage."""
    fake = tmp_path / "python-without-torch"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT.parent / "gpu.sh"), "--cpu-check", "--out", str(out)],
                          env=dict(os.environ, PYTHON=str(fake)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"'{fake}' cannot run the benchmarks" in done.stderr and "No module named 'torch'" in done.stderr
    assert (out / "status.tsv").read_text() == ""
