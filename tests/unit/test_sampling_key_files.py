"""What the sampling verbs' settings key states of the files they read (megadalle.sampling.resume): a training
run's chosen checkpoint and run.json, not whatever else lies in the run directory."""
import json
import os

import torch

from megadalle.sampling.files import MANIFEST, TRANSFORMER
from megadalle.sampling.resume import files_state, model_named


def save_checkpoint(run, step: int) -> None:
    folder = run / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    torch.save({"step": step}, folder / "model.pt")
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.pt": (folder / "model.pt").stat().st_size}}))
    (run / "checkpoints" / "latest").write_text(folder.name)


def state(run, tmp_path) -> dict:
    return files_state({"weights": run}, tmp_path / "out")


def new_run(tmp_path):
    """A run directory with its run.json and a checkpoint at step 1."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    save_checkpoint(run, 1)
    return run


def test_a_run_dirs_files_the_loader_does_not_read_leave_its_state_alone(tmp_path):
    """Every model file of the run directory was stated: a stray .json or an older checkpoint pruned changed the
    key of a finished generate."""
    run = new_run(tmp_path)
    save_checkpoint(run, 2)
    before = state(run, tmp_path)
    (run / "notes.json").write_text("{}")
    (run / "media").mkdir()
    (run / "media" / "grid.safetensors").write_bytes(b"x")
    for file in (run / "checkpoints" / "step_00000001").iterdir():  # pruned by the run's keep_checkpoints
        file.unlink()
    assert state(run, tmp_path) == before


def test_a_newer_checkpoint_the_loader_chooses_changes_the_state(tmp_path):
    run = new_run(tmp_path)
    before = state(run, tmp_path)
    save_checkpoint(run, 2)
    assert state(run, tmp_path) != before


def test_a_run_json_rewritten_changes_the_state(tmp_path):
    run = new_run(tmp_path)
    before = state(run, tmp_path)
    (run / "run.json").write_text('{"config": {}}')
    assert state(run, tmp_path) != before


def test_a_run_json_rewritten_with_the_same_bytes_keeps_the_state_and_tensors_rewritten_do_not(tmp_path):
    """A finished `train` rerun writes run.json anew with the same bytes: its modification time in the state made
    generate refuse its own results. JSON records are stated by content; weights by size and modification time."""
    run = new_run(tmp_path)
    before = state(run, tmp_path)
    for record in (run / "run.json", run / "checkpoints" / "step_00000001" / "manifest.json"):
        record.write_bytes(record.read_bytes())
        os.utime(record, ns=(record.stat().st_mtime_ns + 10**9,) * 2)
    assert state(run, tmp_path) == before
    tensors = run / "checkpoints" / "step_00000001" / "model.pt"
    os.utime(tensors, ns=(tensors.stat().st_mtime_ns + 10**9,) * 2)
    assert state(run, tmp_path) != before


def test_the_older_form_of_the_state_is_the_one_earlier_versions_saved(tmp_path):
    """Keys saved before JSON records were stated by content are accepted by `earlier`: its digest for a fixed set
    of files is that version's (names, sizes and modification times), so it cannot drift."""
    model = tmp_path / "model"
    model.mkdir()
    for name, data in (("model.safetensors", b"tensors"), ("model.json", b"{}")):
        (model / name).write_bytes(data)
        os.utime(model / name, ns=(1_700_000_000_000_000_000,) * 2)
    assert files_state({"weights": model}, tmp_path / "out", earlier=True) == {"weights": "126fc1b58710caee"}


def test_a_link_to_a_model_folders_transformer_names_the_folder(tmp_path):
    """`model_named` looked at the name given before resolving it: a link named otherwise to model/transformer was
    keyed as the Transformer, not as the model."""
    model = tmp_path / "model"
    (model / TRANSFORMER).mkdir(parents=True)
    (model / MANIFEST).write_text("{}")
    (tmp_path / "link").symlink_to(model / TRANSFORMER)
    assert model_named(tmp_path / "link") == model_named(model / TRANSFORMER) == model.resolve()
