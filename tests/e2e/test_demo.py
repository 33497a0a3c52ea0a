"""The demo's fast preset end to end: every stage runs, grids are written, the accuracy line is printed."""
import json
import re

from megadalle.config.compose import compose
from megadalle.demo import run


def test_fast_demo_produces_grids_and_the_accuracy_line(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run(compose("demo", ["demo=fast", f"output={out}"])) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^caption accuracy: \d+% \(chance 8%\)$", printed, re.M), printed[-2000:]
    grids = list((out / "grids").rglob("*.png"))
    assert len(grids) == 4 and {g.parent.name for g in grids} == {"heldout", "seen"}
    for name in ("dvae", "clip", "model"):
        assert (out / f"{name}.safetensors").is_file()
    summary = json.loads((out / "demo.json").read_text())
    assert 0 <= summary["accuracy"]["heldout"]["reranked"] <= 1 and summary["chance"] == 1 / 12
