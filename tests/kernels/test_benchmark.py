"""benchmarks/attention.py runs on a machine without a GPU: tile fractions and the tiny harness check."""
import json
import os
import re
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


def _gpu_sh(*args: str, python: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT.parent / "gpu.sh"), *args], env=dict(os.environ, PYTHON=str(python)),
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def _python_whose_stages_fail(tmp_path: Path) -> Path:
    """An interpreter that passes gpu.sh's preflight at once, fails every benchmark without writing its JSON,
    and runs gpu_report.py for real: gpu.sh's own bookkeeping in seconds."""
    fake = tmp_path / "python-failing-stages"
    fake.write_text(f"""#!/bin/sh
case "$1" in
    -) echo "python fake, no benchmark runs"; exit 0 ;;
    *gpu_report.py) exec "{sys.executable}" "$@" ;;
    *) echo "stage failed on purpose" >&2; exit 3 ;;
esac
""")
    fake.chmod(0o755)
    return fake


def test_gpu_sh_reports_no_figures_from_an_earlier_run_into_the_same_folder(tmp_path):
    """A rerun into one --out whose stages fail: the first run's JSON is removed, gpu.json holds no figures."""
    out = tmp_path / "out"
    out.mkdir()
    for stage in ("attention", "train_step", "sampling"):
        (out / f"{stage}.json").write_text(json.dumps({"device": "earlier run", "rows": [], "step_seconds": 99}))
    done = _gpu_sh("--cpu-check", "--out", str(out), python=_python_whose_stages_fail(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert not any((out / f"{stage}.json").exists() for stage in ("attention", "train_step", "sampling"))
    report = json.loads((out / "gpu.json").read_text())
    assert report["failed"] == ["attention", "train_step", "sampling"]
    assert report["attention"] is report["train_step"] is report["sampling"] is report["device"] is None
    markdown = (out / "gpu.md").read_text()
    assert "earlier run" not in markdown and "No figures from attention, train_step, sampling" in markdown


def test_gpu_report_leaves_out_the_json_of_a_stage_that_failed(tmp_path):
    """gpu_report.py on a folder whose train_step timed out beside an earlier run's train_step.json."""
    (tmp_path / "status.tsv").write_text("attention\t0\t3\ntrain_step\t124\t1\n")
    (tmp_path / "attention.json").write_text(json.dumps({"device": "cpu (harness check only)"}))
    (tmp_path / "train_step.json").write_text(json.dumps({"model": "tiny", "step_seconds": 99.0}))
    (tmp_path / "sampling.json").write_text(json.dumps({"rows": [{"dtype": "fp32", "sparse_tok_s": 12345.0}]}))
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "gpu_report.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "failed or missing stages: train_step, sampling" in done.stderr
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["attention"] == {"device": "cpu (harness check only)"}
    assert report["train_step"] is None and report["sampling"] is None  # timed out; no status: not run
    markdown = (tmp_path / "gpu.md").read_text()
    assert "Training step" not in markdown and "| tiny |" not in markdown and "12,345" not in markdown


def test_gpu_report_keeps_the_rows_a_failed_stage_wrote_during_this_run(tmp_path):
    """attention.py writes its rows as it goes and exits 1 when one failed: one Flex compile error blanked every
    attention figure of the run. Written after this run's preflight, they are kept, marked partial."""
    (tmp_path / "status.tsv").write_text("attention\t1\t40\ntrain_step\t0\t3\nsampling\t124\t50\n")
    (tmp_path / "sampling.json").write_text(json.dumps({"rows": [{"dtype": "fp32", "sparse_tok_s": 12345.0}]}))
    (tmp_path / "environment.txt").write_text("python 3.11, torch 2.13, triton 3.6, NVIDIA H100\n")
    rows = [{"mask": "row", "method": "ours", "fwd_ms": 0.08}, {"mask": "row", "method": "flex", "error": "boom"}]
    (tmp_path / "attention.json").write_text(json.dumps({"device": "NVIDIA H100", "timings": rows}))
    (tmp_path / "train_step.json").write_text(json.dumps({"model": "1b", "device": "cuda", "step_seconds": 1.5,
                                                          "mfu": 0.412, "peak_tflops": 989.0}))
    os.utime(tmp_path / "sampling.json", ns=(0, 0))  # an earlier run's, beside this one's status
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "gpu_report.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["partial"] == ["attention"] and report["attention"]["timings"] == rows
    assert report["sampling"] is None and report["device"] == "NVIDIA H100"
    markdown = (tmp_path / "gpu.md").read_text()
    assert "| row | ours | 0.08 |" in markdown and "Partial figures from attention" in markdown
    assert "No figures from sampling" in markdown and "12,345" not in markdown
    assert "MFU target (>= 45%, `1b` on one H100/H200): **not met**, 41.2% of 989 TFLOP/s." in markdown


def test_gpu_sh_takes_a_relative_python_from_where_it_was_started(tmp_path):
    """`PYTHON=.venv/bin/python benchmarks/gpu.sh` was run from benchmarks/ by the preflight: "cannot run the
    benchmarks", a GPU start wasted."""
    cwd = tmp_path / "cwd"
    (cwd / "bin").mkdir(parents=True)
    fake = _python_whose_stages_fail(tmp_path)
    (cwd / "bin" / "python").symlink_to(fake)
    done = _gpu_sh("--cpu-check", "--out", "run", python=Path("bin/python"), cwd=cwd)
    assert "cannot run the benchmarks" not in done.stderr and "environment: python fake" in done.stdout, done.stderr


def test_gpu_sh_writes_a_relative_out_where_it_was_started_and_says_where(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = _gpu_sh("--cpu-check", "--out", "myrun", python=_python_whose_stages_fail(tmp_path), cwd=cwd)
    assert (cwd / "myrun" / "gpu.json").is_file() and not (SCRIPT.parents[1] / "myrun").exists()
    assert f"wrote {cwd / 'myrun' / 'gpu.json'}" in done.stdout


def test_gpu_sh_refuses_a_flag_without_its_value_in_one_line(tmp_path):
    for flag in ("--out", "--limits", "--total"):
        done = _gpu_sh("--cpu-check", flag, python=tmp_path / "never-run")
        assert done.returncode == 2
        assert done.stderr == f"gpu.sh: {flag} needs a value (--out DIR, --limits A,B,C or --total S)\n"
    done = _gpu_sh("--total", "0", python=tmp_path / "never-run")
    assert done.returncode == 2 and "--total takes whole seconds above 0 (got '0')" in done.stderr
    done = _gpu_sh("--limits", "0,10,10", python=tmp_path / "never-run")  # was taken, then blamed on --total
    assert done.returncode == 2 and "--limits takes three whole seconds above 0, attention,train_step,sampling " \
        "(got '0 10 10')" in done.stderr


def test_gpu_sh_holds_the_whole_run_to_its_total(tmp_path):
    """With no time left after the preflight, no stage starts: each is recorded as not run (124, 0 s)."""
    out = tmp_path / "out"
    done = _gpu_sh("--cpu-check", "--total", "1", "--out", str(out), python=_python_whose_stages_fail(tmp_path))
    assert done.returncode == 1
    assert (out / "status.tsv").read_text() == "attention\t124\t0\ntrain_step\t124\t0\nsampling\t124\t0\n"
    assert "== attention: not run, the run's --total 1s is spent" in done.stdout
    assert not (out / "attention.log").exists()


def test_gpu_sh_worst_case_is_within_six_minutes_and_its_help_says_its_limits():
    """The limits the help, README and RESULTS quote are the script's, and they add up to at most 6 minutes."""
    script = (SCRIPT.parent / "gpu.sh").read_text()
    *limits, total = map(int, re.search(r'limits=\((\d+) (\d+) (\d+)\)\n +: "\$\{total:=(\d+)\}"  # 6 minutes',
                                        script).groups())
    assert total <= 360 - 5, "the report needs a few seconds after the run's total"
    quoted = f"{limits[0]}, {limits[1]} and {limits[2]} s"
    assert quoted in " ".join(script.split()) and f"--total, {total} s on a GPU" in " ".join(script.split())
    readme = " ".join((SCRIPT.parents[1] / "README.md").read_text().split())
    results = " ".join((SCRIPT.parent / "RESULTS.md").read_text().split())
    assert f"stage limits of {quoted} within a whole-run `--total` of {total} s" in readme
    assert f"stage limits of {quoted} within a whole-run `--total` of {total} s" in results
