"""A verb run again into a folder holding an earlier run's results: refused before any model is read, then
replaced with overwrite=true (generate's scores.json, evaluate's metrics.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import megadalle.bundle
from megadalle.cli import main


def refused_then_overwritten(base: list[str], change: str, differs: str, folder: Path, results: str, monkeypatch,
                             capsys) -> dict:
    """Run `base`, then `base` + `change` (refused naming what `differs`, the results untouched, no model read), then
    with overwrite=true; returns the results the last run wrote."""
    verb = base[0]
    assert main(base) == 0
    capsys.readouterr()
    first = (folder / results).read_text()
    real = megadalle.bundle.open_models
    monkeypatch.setattr(megadalle.bundle, "open_models", lambda *a, **k: pytest.fail("a model was read"))
    assert main([*base, change]) == 2
    assert capsys.readouterr().err == f"megadalle {verb}: output={folder}: holds an earlier {verb}'s results " \
                                      f"({results}) of other settings ({differs}); give another output, or " \
                                      "overwrite=true to replace them\n"
    assert (folder / results).read_text() == first
    monkeypatch.setattr(megadalle.bundle, "open_models", real)
    assert main([*base, change, "overwrite=true"]) == 0
    return json.loads((folder / results).read_text())
