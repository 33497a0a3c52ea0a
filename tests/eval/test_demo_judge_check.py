"""benchmarks/demo_judge_check.py at a toy size (pictures only, no demo folder), so that it does not rot; and the
figures it exists for: no two-object picture passes the judge, and no single shape it passed before is lost."""
from tests.benchmark_run import run_benchmark


def test_demo_judge_check_benchmark(tmp_path):
    printed, report = run_benchmark("demo_judge_check.py", "--pairs", "12", "--per-scene", "1",
                                    out=tmp_path / "judge.json")
    rows = {row["set"]: row for row in report["pictures"]}
    assert set(rows) == {f"{kind}, {view}" for kind in ("two objects", "one object")
                         for view in ("drawn", "2-px cells", "4-px cells")}
    assert rows["two objects, drawn"]["old"] > 0 and all(rows[s]["new"] == 0 for s in rows if s.startswith("two"))
    assert rows["one object, drawn"]["new"] == 48 and all(rows[s]["old_only"] == 0 for s in rows if s.startswith("one"))
    assert "demo_samples" not in report and "| two objects, drawn | 12 |" in printed
