"""`megadalle evaluate` run again into the same folder: an earlier run's results are refused unless overwrite=true."""
import json

import pytest

from megadalle.cli import main
from tests.sample.test_generate import write_tiny_models


@pytest.fixture
def models(tmp_path):
    write_tiny_models(tmp_path)
    (tmp_path / "captions.txt").write_text("a red circle\na blue square\n")
    return tmp_path


def evaluate_args(models, *more):
    return ["evaluate", f"weights={models / 'model.safetensors'}", f"captions={models / 'captions.txt'}", "fid=false",
            "device=cpu", *more]


def test_a_rerun_into_an_earlier_runs_folder_is_refused_unless_overwrite(models, tmp_path, capsys, monkeypatch):
    import megadalle.bundle

    base = evaluate_args(models, "n=1", f"out_dir={tmp_path}")
    assert main(base) == 0
    capsys.readouterr()
    real = megadalle.bundle.open_models
    monkeypatch.setattr(megadalle.bundle, "open_models", lambda *a, **k: pytest.fail("a model was read"))
    assert main([*base, "n=2"]) == 2
    assert capsys.readouterr().err == f"megadalle evaluate: output={tmp_path / 'evaluate'}: holds an earlier " \
                                      "evaluate's results (metrics.json); give another output, or overwrite=true to " \
                                      "replace them\n"
    assert json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["samples_per_caption"] == 1
    monkeypatch.setattr(megadalle.bundle, "open_models", real)
    assert main([*base, "n=2", "overwrite=true"]) == 0
    assert json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["samples_per_caption"] == 2
