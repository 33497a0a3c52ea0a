"""The benchmarks that no other test ran, each at a toy size, so that none of them rots unnoticed.

Each script runs as a user runs it (a fresh interpreter, its own arguments) and must write its JSON with
every figure it names. The sizes are chosen for seconds, not for meaningful numbers. Covered elsewhere:
attention.py and gpu.sh (tests/kernels/test_benchmark.py, which runs sampling.py and train_step.py
through gpu.sh --cpu-check), compare_plain.py, learning_check.py, scale_rehearsal.py; sampling_defaults.py
needs a finished demo and runs on the fast demo in tests/e2e/test_demo.py.
"""
import json
from pathlib import Path

from tests.benchmark_run import run_benchmark


def rates_positive(rates: dict) -> bool:
    return all(r["wall"] > 0 and r["cpu"] > 0 for r in rates.values())


def test_loader_benchmark(tmp_path):
    # Sources of 96x72: prepare skips images whose short side is under data.min_side (64).
    _, report = run_benchmark("loader.py", "--images", "8", "--source-size", "96x72", "--image-size", "32",
                              "--batch", "4", out=tmp_path / "loader.json")
    assert set(report["one_process"]) == {"prepare", "image loader", "image loader, resize to S/2",
                                          "token loader (BPE dropout 0.1)"}
    assert rates_positive(report["one_process"]) and report["prepare_parallel"]["samples_per_s"] > 0


def test_index_benchmark(tmp_path):
    _, report = run_benchmark("index.py", "--images", "8", "--image-size", "32", "--per-shard", "4",
                              out=tmp_path / "index.json")
    assert set(report["one_process"]) == {"index (every image decoded)", "index decode=false"}
    assert rates_positive(report["one_process"])


def test_export_memory_benchmark(tmp_path):
    _, report = run_benchmark("export_memory.py", "--d-model", "64", "--layers", "4", out=tmp_path / "export.json")
    assert report["bf16_bytes"] == 2 * report["params"]
    assert [row["shards"] for row in report["rows"]] == ["one shard (5 GB limit)", "shards of 1/5 of the weights"]
    assert all(row["anon_peak"] > 0 and row["anon_x_bf16"] > 0 for row in report["rows"])


def test_demo_dvae_benchmark(tmp_path):
    _, report = run_benchmark("demo_dvae.py", "--preset", "fast", "--check-per-scene", "1", "--output",
                              str(tmp_path / "runs"), "--variant", "toy",
                              "dvae_steps=3 threads=1 seed=1 dvae.decoder_min_width=128", out=tmp_path / "demo_dvae.json")
    (row,) = report["rows"]
    assert row["variant"] == "toy" and row["images"] == 48 and row["cpu_seconds"] > 0
    assert 0 <= row["reconstructions_kept"] <= 1 and 0 < row["codes_in_use"] <= 1
    assert json.loads((tmp_path / "runs" / "toy" / "dvae.json").read_text())["config"]["decoder_min_width"] == 128


def test_help_and_bad_arguments_are_answered_not_tracebacks(tmp_path):
    """Each answer a user meets before a benchmark runs: usage for --help, one line for a bad argument."""
    import subprocess
    import sys

    from tests.benchmark_run import BENCHMARKS

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)

    assert run("bash", str(BENCHMARKS / "gpu.sh"), "--help").stdout.startswith("Every GPU benchmark in one")
    done = run(sys.executable, str(BENCHMARKS / "gpu_report.py"), "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage:")
    done = run(sys.executable, str(BENCHMARKS / "gpu_report.py"), str(tmp_path / "nope"))
    assert done.returncode == 1 and "is not a folder gpu.sh wrote" in done.stderr and "Traceback" not in done.stderr
    done = run(sys.executable, str(BENCHMARKS / "compare_plain.py"))
    assert done.returncode == 1 and "train_step.py --compare-plain" in done.stderr
    done = run(sys.executable, str(BENCHMARKS / "train_step.py"), "--steps", "0")
    assert done.returncode == 2 and "argument --steps: 0 is below 1" in done.stderr
    done = run(sys.executable, str(BENCHMARKS / "train_step.py"), "--peak-tflops", "0")  # divided by 0 at the end
    assert done.returncode == 2 and "argument --peak-tflops: 0 is not above 0" in done.stderr
    done = run(sys.executable, str(BENCHMARKS / "train_step.py"), "--model", "nosuch")  # a hydra traceback
    assert done.returncode == 2 and "argument --model: 'nosuch' is none of conf/model's: 12b, 1b, small, tiny" \
        in done.stderr
    for args, said in ((["--methods", "ours,nosuch"], "argument --methods: 'nosuch': expected among ours, flex, "
                                                       "sdpa_causal, sdpa_masked"),
                       (["--masks", "rows"], "argument --masks: 'rows': expected among row, column, conv, row_strict, "
                                             "dense"),
                       (["--calls", "0"], "argument --calls: 0 is below 1"), (["--batch", "0"], "argument --batch: "
                                                                                                "0 is below 1")):
        done = run(sys.executable, str(BENCHMARKS / "attention.py"), *args)  # each failed in every row of the run
        assert done.returncode == 2 and said in done.stderr, done.stderr[-2000:]
    for flag in ("--naive-tokens", "--repeats"):
        done = run(sys.executable, str(BENCHMARKS / "sampling.py"), flag, "0")
        assert done.returncode == 2 and f"argument {flag}: 0 is below 1" in done.stderr, done.stderr[-2000:]


def test_sampling_benchmark_with_fewer_layers_than_the_pattern(tmp_path):
    _, report = run_benchmark("sampling.py", "--layers", "2", "--width", "64", "--text-len", "4", "--grid", "2",
                              "--batch", "1", "--threads", "1", "--naive-tokens", "1", out=tmp_path / "s.json")
    assert report["model"] and all(row["sparse_tok_s"] > 0 for row in report["rows"])


CAPTURE_PARSERS = r"""
import argparse, importlib.util, json, sys
from pathlib import Path

benchmarks = Path(sys.argv[1])
sys.path.insert(0, str(benchmarks))


class Parsed(Exception):
    pass


def capture(parser, *args, **kwargs):
    raise Parsed(parser)


argparse.ArgumentParser.parse_args = capture  # main() builds its parser and hands it over here, running nothing
outs = {}
for script in sorted(benchmarks.glob("*.py")):
    if "ArgumentParser(" not in script.read_text():
        continue
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    try:
        module.main()
    except Parsed as parsed:
        outs[script.name] = {option: action.default for action in parsed.args[0]._actions
                             for option in action.option_strings if option.endswith("-out") or option == "--json"}
print(json.dumps(outs))
"""


def test_no_benchmark_writes_a_committed_file_by_default():
    """A run with the default --out (--json, --compare-out) must not overwrite the JSON RESULTS.md cites."""
    import subprocess
    import sys

    from tests.benchmark_run import BENCHMARKS

    done = subprocess.run([sys.executable, "-c", CAPTURE_PARSERS, str(BENCHMARKS)], capture_output=True, text=True,
                          timeout=300, cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    outs = json.loads(done.stdout.splitlines()[-1])
    with_parsers = {p.name for p in BENCHMARKS.glob("*.py") if "ArgumentParser(" in p.read_text()}
    assert set(outs) == with_parsers and all(outs.values()), outs  # every script's parser read, each names its JSON
    listed = subprocess.run(["git", "ls-files", "benchmarks"], cwd=BENCHMARKS.parent, capture_output=True, text=True)
    tracked = set(listed.stdout.split())  # empty in a copy without .git: there, a committed file is one that exists
    for script, defaults in outs.items():
        for option, default in defaults.items():
            path = (BENCHMARKS.parent / default).resolve()
            assert path.parent == BENCHMARKS and path.name.startswith(Path(script).stem), (script, option, default)
            assert not path.exists() and str(path.relative_to(BENCHMARKS.parent)) not in tracked, (script, option)


def test_sampling_naive_rate_starts_its_clock_after_the_warm_up_has_run_on_the_gpu(monkeypatch):
    """On CUDA the warm-up forward is queued, not done: without a synchronize first it is timed as a token."""
    import time
    from types import SimpleNamespace

    import torch

    from megadalle.sampling.loop import SamplingSettings
    from tests.benchmark_run import load_benchmark

    sampling = load_benchmark("sampling.py")
    events = []

    class Model:
        cfg = SimpleNamespace(grid_len=4)

        def __call__(self, text, image):
            events.append("forward")
            return None, torch.zeros(1, 4, 10)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("synchronize"))
    monkeypatch.setattr(time, "perf_counter", lambda: events.append("clock") or float(len(events)))
    text = SimpleNamespace(shape=(1, 3), device="cpu", is_cuda=True)  # what the function reads of a CUDA tensor
    assert sampling.naive_tokens_per_s(Model(), text, 2, SamplingSettings(top_k=0)) > 0
    assert events == ["forward", "synchronize", "clock", "forward", "forward", "synchronize", "clock"]


def test_every_json_results_md_cites_is_committed_and_the_restored_ones_hold_their_figures():
    """RESULTS.md's figures stand on the JSON it names: each must be there (brace lists expanded; `...` short
    forms, the `--out` of a command still to run and gpu.sh's gpu.json are not evidence), and the runs restored
    from history after a default --out overwrote them must hold the figures their sections quote."""
    import itertools
    import re

    from tests.benchmark_run import BENCHMARKS

    text = (BENCHMARKS / "RESULTS.md").read_text()
    cited = set()
    for match in re.finditer(r"(?<![\w./<-])(?:benchmarks/)?([\w{},.-]+?\.json)\b", text):
        name = match.group(1)
        if name.startswith(".") or name == "gpu.json" or text[:match.start()].endswith("--out "):
            continue
        pieces = re.split(r"\{([^}]*)\}", name)  # odd pieces: inside braces, "0,1,2" or "0..5"
        choices = [[p] if i % 2 == 0 else p.split(",") if "," in p else
                   [str(n) for n in range(int(p.split("..")[0]), int(p.split("..")[1]) + 1)]
                   for i, p in enumerate(pieces)]
        cited.update("".join(names) for names in itertools.product(*choices))
    assert len(cited) > 80 and sorted(name for name in cited if not (BENCHMARKS / name).is_file()) == []

    def load(name: str) -> dict:
        return json.loads((BENCHMARKS / name).read_text())

    mib = 2 ** 20
    rows = load("sampling_cpu_20261125.json")["rows"]
    assert (round(rows[0]["cached_tok_s"]), round(rows[0]["naive_tok_s"], 2)) == (455, 8.95)
    assert [round(r["anon_peak"] / mib) for r in load("export_memory_20261201.json")["rows"]] == [275, 131]
    pipe = load("scale_rehearsal_12b_width_20261201.json")["rows"]["pipe"]["measured"]
    assert [round(b / mib) for b in pipe["two_steps"][:2]] == [4972, 5161]
