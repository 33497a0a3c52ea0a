"""What `export run=` is given instead of a training run: a model folder, a checkpoint, the folder of runs, a file, a
garbled run.json. Each was a Python traceback (export rebuilt the run's task before any check); now one line that
says what the path is and which `run=` to give."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from megadalle.bundle_write import write_bundle
from megadalle.cli import main
from megadalle.weights.replace import folder_export


def refusal(capsys, run, output) -> str:
    assert main(["export", f"run={run}", f"output={output}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not output.exists()
    return err.removeprefix("megadalle export: ").strip()


def test_a_run_key_naming_no_run_is_one_line_with_the_run_to_give(trained, tmp_path, capsys):
    run, _, dvae, clip = trained
    folder = write_bundle(run, tmp_path / "model", dvae_weights=str(dvae), clip_weights=str(clip))
    step = sorted((run / "checkpoints").glob("step_*"))[-1]
    output = tmp_path / "out"
    exported_from = f"give the run it was exported from: run={run}"
    assert refusal(capsys, folder, output) == (f"run={folder}: a model folder, which an export wrote, not a training "
                                               f"run; {exported_from}")
    assert refusal(capsys, folder / "transformer", output) == (
        f"run={folder / 'transformer'}: inside the model folder {folder}, which an export wrote, not a training run; "
        f"{exported_from}")
    assert refusal(capsys, run / "checkpoints", output) == (
        f"run={run / 'checkpoints'}: the checkpoints folder of the training run {run}; give run={run}")
    assert refusal(capsys, step, output) == (
        f"run={step}: the checkpoint {step.name} of the training run {run}, not the run; give run={run} "
        f"checkpoint={step} (run= alone exports its newest checkpoint)")
    assert refusal(capsys, run.parent, output).startswith(f"run={run.parent}: a folder of training runs (run")
    assert refusal(capsys, run / "run.json", output) == (
        f"run={run / 'run.json'}: a file, not a training run directory; give its run: run={run}")
    weights = tmp_path / "one.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    assert refusal(capsys, weights, output) == (f"run={weights}: a file, not a training run directory; give the "
                                                "directory holding run.json")
    assert refusal(capsys, tmp_path, output) == f"run={tmp_path}: not a training run directory (no run.json)"
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "run.json").write_text("{not json")
    assert refusal(capsys, garbled, output).startswith(f"{garbled / 'run.json'}: not readable (")


def test_a_run_json_that_cannot_rebuild_the_run_is_one_line(tmp_path, capsys):
    """A run.json that reads but lacks what rebuilds the task was a ValueError, KeyError or unpacking traceback."""
    run, output = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    record = run / "run.json"
    factory = "megadalle.train.transformer:task_from_config"
    for written, said in [({}, f"{record} names no task_factory, so the run cannot be rebuilt"),
                          ({"task_factory": factory}, f"{record}: its config is missing, not the mapping"),
                          ({"task_factory": factory, "config": [1]}, f"{record}: its config is a JSON list, not"),
                          ({"task_factory": "nocolon", "config": {}},
                           f"{record}: task_factory='nocolon' is not module:function, so the run cannot be rebuilt"),
                          ({"task_factory": "megadalle.nothere:f", "config": {}},
                           f"{record}: task_factory='megadalle.nothere:f': no such function in this megadalle"),
                          ({"task_factory": "megadalle.train.transformer:nothere", "config": {}},
                           f"{record}: task_factory='megadalle.train.transformer:nothere': no such function")]:
        record.write_text(json.dumps(written))
        assert refusal(capsys, run, output).startswith(said), written


def test_a_run_given_relative_is_recorded_so_that_the_folder_names_it_from_anywhere(trained, tmp_path, monkeypatch,
                                                                                    capsys):
    """`export run=runs/x output=model`, the usual call, recorded sources.run as typed: the model-folder guard's way
    out then gave RUN (it took only an absolute record), and export run=FOLDER took it relative to wherever it ran."""
    run = trained[0]
    monkeypatch.chdir(run.parent)
    folder = write_bundle(run.name, "model", dvae_weights=str(trained[2]))
    assert json.loads((folder / "bundle.json").read_text())["sources"]["run"] == str(run.resolve())
    monkeypatch.chdir(tmp_path)
    folder = run.parent / "model"
    assert folder_export(folder).startswith(f"`megadalle export run={run.resolve()} output={folder} ")
    assert refusal(capsys, folder, tmp_path / "out").endswith(f"give the run it was exported from: run={run.resolve()}")


def test_a_relative_run_of_an_older_record_is_unknown_even_where_it_reads_as_a_run(tmp_path, monkeypatch, capsys):
    """An older bundle.json's relative run was relative to where that export ran, which nothing records: read from
    here, it named whichever run lay at that path."""
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "run.json").write_text("{}")
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "bundle.json").write_text(json.dumps({"transformer": "transformer", "sources": {"run": "runs/x"}}))
    for here in (tmp_path, folder):
        monkeypatch.chdir(here)
        assert folder_export(folder) == (f"`megadalle export run=RUN output={folder}` (RUN: its Transformer's "
                                         "training run)")
        assert refusal(capsys, folder, tmp_path / "out").endswith(
            "give the run it was exported from (the directory holding run.json)")
