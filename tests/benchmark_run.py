"""Running a script under benchmarks/ from a test, as a user runs it: a fresh interpreter, its own arguments."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, out: Path) -> tuple[str, dict]:
    """(what the script printed, the JSON it wrote to `out`); fails the test with its output if it fails."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())


def load_benchmark(script: str) -> ModuleType:
    """benchmarks/<script> imported as a module named for its stem, its siblings (arguments.py) importable as
    they are when it runs as a script."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
