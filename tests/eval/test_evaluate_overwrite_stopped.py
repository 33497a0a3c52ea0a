"""`megadalle evaluate overwrite=true` stopped midway, over a finished run of other settings: the earlier run's
samples were deleted before sampling while its metrics.json stayed, and a rerun of the earlier command then said
"done already (same settings); skipped" over a samples folder that no longer held them."""
import json

import pytest

from megadalle.cli import main
from tests.eval.evaluate_command import evaluate_args
from tests.tiny_models import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\na blue square\n")
    return tmp_path


def test_an_overwrite_stopped_midway_leaves_no_earlier_record_and_the_earlier_command_samples_again(
        models, tmp_path, capsys, monkeypatch):
    import megadalle.evaluate

    out = tmp_path / "eval"
    first = evaluate_args(models, "n=3", "save_samples=true", f"output={out}")
    assert main(first) == 0
    capsys.readouterr()
    first_samples = {f"{c:04d}_{k:03d}.png" for c in range(2) for k in range(3)}  # 2 captions x n=3
    assert {p.name for p in (out / "samples").glob("*.png")} == first_samples

    save = megadalle.evaluate.save_images

    def save_then_stop(images, folder, caption_index):
        save(images, folder, caption_index)
        raise KeyboardInterrupt  # Ctrl-C once the first caption's samples are saved

    monkeypatch.setattr(megadalle.evaluate, "save_images", save_then_stop)
    assert main(evaluate_args(models, "n=2", "save_samples=true", "overwrite=true", f"output={out}")) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (f"megadalle evaluate: interrupted; no metrics.json of this "
                                                        f"run in {out}")
    assert not (out / "metrics.json").exists() and not (out / "metrics.md").exists()
    assert {p.name for p in (out / "samples").glob("*.png")} == {"0000_000.png", "0000_001.png"}

    monkeypatch.undo()
    assert main(first) == 0
    assert "done already" not in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["captions"], metrics["samples_per_caption"], metrics["samples"]) == (2, 3, 6)
    assert (out / "metrics.md").is_file()
    assert {p.name for p in (out / "samples").glob("*.png")} == first_samples
