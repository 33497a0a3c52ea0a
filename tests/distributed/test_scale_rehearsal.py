"""benchmarks/scale_rehearsal.py at its --toy size, so the rehearsal cannot rot: 4 gloo ranks train
and checkpoint, export runs, and every measured figure lands in the JSON beside plan's prediction."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.distributed
def test_toy_rehearsal_measures_and_predicts_every_figure(tmp_path):
    out = tmp_path / "rehearsal.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_rehearsal.py"), "--toy", "--modes", "zero3",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    result = json.loads(out.read_text())
    row = result["rows"]["zero3"]
    assert "skipped" not in row, row.get("skipped")
    measured, predicted = row["measured"], row["predicted"]
    assert len(measured["two_steps"]) == len(measured["construction"]) == len(measured["checkpoint"]) == 4
    assert all(x > 0 for x in measured["two_steps"] + measured["checkpoint"]) and measured["checkpoint_total"] > 0
    assert set(predicted) >= {"two_steps", "construction", "checkpoint_busiest", "checkpoint_total", "export", "bf16_copy"}
    assert set(result["targets"]["zero3"]) == {"construction_over_share_plus_layer", "two_steps_vs_plan",
                                               "export_over_bf16_copy"}
    assert "| zero3 |" in proc.stdout and result["load_average"]


def _row(two_steps: float) -> dict:
    return {"measured": {"construction": [1.0] * 4, "two_steps": [two_steps] * 4, "export": 1.0},
            "predicted": {"share_plus_layer": 1.0, "two_steps": two_steps, "bf16_copy": 1.0}}


def test_targets_weigh_zero3_and_the_four_stage_pipeline_against_zero1():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scale_rehearsal

    targets = scale_rehearsal.targets({"zero1": _row(10.0), "zero3": _row(4.0), "pipe4": _row(6.0),
                                       "zero2": {"skipped": "not run"}})
    assert targets["zero3_over_zero1"] == {"value": 0.4, "target": "<= 0.5", "met": True}
    assert targets["pipe4_over_zero1"]["value"] == 0.6 and not targets["pipe4_over_zero1"]["met"]
    assert "zero2" not in targets


def test_four_stages_need_four_layers():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_rehearsal.py"), "--modes", "pipe4",
                           "--replan"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--layers >= 4 (got 1)" in proc.stderr


def test_replan_needs_the_json_of_an_earlier_run():
    """The default --out is a new file: --replan without --out has no rows to predict beside."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_rehearsal.py"), "--replan"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--replan predicts again for an earlier run's rows: give its JSON" in proc.stderr


def test_rows_are_kept_only_for_the_same_size_and_allocator(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scale_rehearsal

    out = tmp_path / "rows.json"
    out.write_text(json.dumps({"model": ["model=tiny"], "rows": {"zero1": {}}}))  # written before allocators were recorded
    assert scale_rehearsal.earlier_rows(out, ["model=tiny"], "glibc default") == {"zero1": {}}
    assert scale_rehearsal.earlier_rows(out, ["model=tiny"], None) == {"zero1": {}}  # --replan: measurements stay
    assert scale_rehearsal.earlier_rows(out, ["model=tiny"], "MALLOC_MMAP_THRESHOLD_=1048576") == {}
    assert scale_rehearsal.earlier_rows(out, ["model=12b"], None) == {}


def test_rows_of_another_size_or_allocator_are_never_dropped(tmp_path):
    out = tmp_path / "rows.json"
    out.write_text(json.dumps({"model": ["model=tiny"], "rows": {"zero1": _row(1.0)}}))  # glibc's default allocator
    before = out.read_text()
    for args in (["--width", "1024", "--replan"], ["--toy", "--modes", "zero1"]):
        command = [sys.executable, str(ROOT / "benchmarks" / "scale_rehearsal.py"), *args, "--out", str(out)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "holds no rows of this size and allocator" in proc.stderr, proc.stderr
        assert "--glibc-default" in proc.stderr and out.read_text() == before
