"""`export` rebuilds the run's task from its run.json once and checks its output once before reading the checkpoint:
the verb built the task for the kind, and the export built it again (and checked the output twice, kind unknown and
known)."""
from __future__ import annotations

import pytest

from megadalle import export
from megadalle.cli import main
from megadalle.sampling.load import WrongKind, load_model
from megadalle.train import consolidate


def counted(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def count(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, count)


def test_the_task_is_built_and_the_output_checked_once(trained, tmp_path, monkeypatch):
    calls = []
    for module in (export, consolidate):
        counted(monkeypatch, module, "run_task", calls)
    counted(monkeypatch, consolidate, "check_replaceable", calls)
    assert main(["export", f"run={trained[0]}", f"output={tmp_path / 'weights'}", "weights_only=true"]) == 0
    assert sorted(calls) == ["check_replaceable", "run_task"]


def test_a_model_folder_export_builds_the_task_once(trained, tmp_path, monkeypatch):
    """The folder export built it four times: the verb, the folder's kind check (model_config), the compatibility
    check of its pieces (sampling/compatible.check_files, which reads every piece's config as generate does) and the
    Transformer's export; now the verb's alone."""
    run, _, dvae, clip = trained
    calls = []
    for module in (export, consolidate):
        counted(monkeypatch, module, "run_task", calls)
    assert main(["export", f"run={run}", f"output={tmp_path / 'model'}", f"dvae_weights={dvae}",
                 f"clip_weights={clip}"]) == 0
    assert calls == ["run_task"]


def test_write_bundle_from_python_builds_the_task_once(trained, tmp_path, monkeypatch):
    """write_bundle called without `trained=` built the task for its kind check (model_config) and again for the
    Transformer's export, beside check_files' own build: now its own alone."""
    from megadalle.bundle_write import write_bundle

    run, _, dvae, clip = trained
    calls = []
    counted(monkeypatch, consolidate, "run_task", calls)
    write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    assert calls == ["run_task"]


def test_load_model_builds_a_runs_task_once_and_refuses_another_kind_before_reading(trained, monkeypatch):
    """load_model on a run directory built the task for its kind check (model_config) and again in load_run."""
    calls = []
    counted(monkeypatch, consolidate, "run_task", calls)
    load_model(trained[0], "transformer")
    assert calls == ["run_task"]
    monkeypatch.setattr(consolidate, "checkpoint_tensors", lambda *a, **k: pytest.fail("a tensor was read"))
    with pytest.raises(WrongKind, match="is a 'transformer' training run, not a 'dvae' one"):
        load_model(trained[0], "dvae")
