"""Merge the JSON files of one `benchmarks/gpu.sh` run into gpu.json and a Markdown table gpu.md.

    python benchmarks/gpu_report.py DIR

The commit is `git rev-parse` of the checkout, or $MEGADALLE_COMMIT where the copy has no .git.
Reads DIR/status.tsv (stage, exit status, seconds) and the DIR/<stage>.json of each stage that exited 0. A
failed or timed-out stage's JSON is its figures so far (attention.py writes its rows as it goes, and exits 1
when one row failed: one Flex compile error blanked every figure of the one GPU run) where it was written after
this run's preflight (DIR/environment.txt; gpu.sh removes each stage's JSON before the stage starts): kept and
marked partial. Otherwise it is left out (null in gpu.json, named in gpu.md), as it may be an earlier run's into
the same folder. Exits non-zero when a stage failed, after writing both files.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

STAGES = ("attention", "train_step", "sampling")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]


MFU_TARGET = 0.45
"""Issue 10: `1b` on one H100/H200 at >= 45% MFU (bf16, fp32 accumulation)."""


def mfu_verdict(train: dict) -> str:
    """The line that says whether the training step meets issue 10's MFU target, and over which peak."""
    mfu, peak = train.get("mfu"), train.get("peak_tflops")
    if mfu is None or str(train.get("device", "")).startswith("cpu") or train.get("model") != "1b":
        return f"MFU target (>= {MFU_TARGET:.0%}, `1b` on one H100/H200): not measured by this row."
    met = "met" if mfu >= MFU_TARGET else "**not met**"
    return f"MFU target (>= {MFU_TARGET:.0%}, `1b` on one H100/H200): {met}, {mfu:.1%} of {peak:g} TFLOP/s."


def markdown(report: dict) -> str:
    lines = [f"# GPU benchmarks, {report['date']}", "", f"device: {report['device']}; commit {report['commit']}",
             "", f"environment: {report.get('environment') or 'not recorded'}", "",
             "| stage | exit status | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {st['rc']} | {st['seconds']} |" for s, st in report["status"].items()]
    none = [name for name in report["failed"] if name not in report.get("partial", [])]
    if none:
        lines += ["", f"No figures from {', '.join(none)}: failed, timed out or not run (see the .log files)."]
    if report.get("partial"):
        lines += ["", f"Partial figures from {', '.join(report['partial'])}: the stage failed or ran out of time "
                      "after writing them (its rows so far; see its .log file and the rows' error column)."]
    att = report.get("attention") or {}
    if att.get("timings"):
        lines += ["", f"## Attention ({att.get('shape')})", ""]
        lines += _table(att["timings"], ["mask", "method", "fwd_ms", "fwd_bwd_ms", "fwd_tflops", "fwd_bwd_tflops",
                                         "peak_mib", "max_err", "error"])
    if att.get("pattern_12b"):
        lines += ["", "Totals over the 12b layer pattern (47 row + 16 column + 1 conv), milliseconds:", ""]
        lines += _table(att["pattern_12b"], ["method", "fwd_ms", "fwd_bwd_ms"])
        lines += [""] + [f"- {line}" for line in att.get("summary", [])]
    train = report.get("train_step")
    if train:
        lines += ["", "## Training step", ""]
        lines += _table([train], ["model", "device", "dtype", "micro_batch", "seq_len", "activation_checkpointing",
                                  "step_seconds", "tokens_per_s", "achieved_tflops", "peak_tflops", "mfu",
                                  "peak_memory_gib"])
        lines += ["", mfu_verdict(train)]
    sampling = report.get("sampling")
    if sampling:
        lines += ["", "## Sampling (cached image tokens/s)", ""]
        lines += _table(sampling["rows"], ["dtype", "threads", "batch", "sparse_tok_s", "model_cache_tok_s", "naive_tok_s",
                                           "sparse_over_model_cache"])
    return "\n".join(lines) + "\n"


def this_runs(folder: Path, name: str) -> bool:
    """Whether the failed stage `name` left JSON written during this run: after its preflight's environment.txt."""
    path, began = folder / f"{name}.json", folder / "environment.txt"
    return path.exists() and began.exists() and path.stat().st_mtime_ns >= began.stat().st_mtime_ns


def main(folder: Path) -> int:
    status = {}
    for line in (folder / "status.tsv").read_text().splitlines():
        name, rc, seconds = line.split("\t")
        status[name] = {"rc": int(rc), "seconds": int(seconds)}
    commit = os.environ.get("MEGADALLE_COMMIT") or subprocess.run(  # the variable: a copy without .git
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit or "unknown", "status": status}
    report["failed"] = [name for name in STAGES if status.get(name, {"rc": None})["rc"] != 0]
    report["partial"] = [name for name in report["failed"] if name in status and this_runs(folder, name)]
    for name in STAGES:
        path = folder / f"{name}.json"
        kept = path.exists() and (name not in report["failed"] or name in report["partial"])
        report[name] = json.loads(path.read_text()) if kept else None
    report["device"] = (report["attention"] or {}).get("device") or (report["train_step"] or {}).get("device")
    environment = folder / "environment.txt"  # gpu.sh's preflight: python, torch, triton, device
    report["environment"] = environment.read_text().strip().splitlines()[-1] if environment.exists() else None
    (folder / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "gpu.md").write_text(markdown(report))
    print(f"wrote {folder / 'gpu.json'} and {folder / 'gpu.md'}")
    if report["failed"]:
        print(f"failed or missing stages: {', '.join(report['failed'])} (see their .log files)", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    usage = "usage: python benchmarks/gpu_report.py DIR   (a folder benchmarks/gpu.sh wrote: its table again)"
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(usage if len(sys.argv) != 2 else f"gpu_report.py: {sys.argv[1]} is not a folder gpu.sh wrote")
    sys.exit(main(Path(sys.argv[1])))
