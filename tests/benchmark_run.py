"""Running a script under benchmarks/ from a test, as a user runs it: a fresh interpreter, its own arguments."""
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, out: Path) -> tuple[str, dict]:
    """(what the script printed, the JSON it wrote to `out`); fails the test with its output if it fails."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())
