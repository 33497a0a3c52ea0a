"""The bounds of what a sampling verb's settings key states and what its refusal advises
(megadalle.sampling.resume): a generate writing inside a sharded model folder never counts its own files as the
model's, and "rerun that command" is advised where the models are named otherwise, though their files differ too, and
only there: never where files changed behind a setting that is the same."""
import pytest
import torch

from megadalle.config import ConfigError
from megadalle.sampling.resume import SHOWN, UNFINISHED, SavedBatches, differences, files_state, open_saved, read_files


def model_folder(tmp_path):
    """A sharded export: its index, a shard and a config."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "model-00001-of-00001.safetensors").write_bytes(b"w" * 64)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("named", ["folder", "index"])
def test_a_generate_inside_a_model_folder_does_not_state_its_own_files(tmp_path, named):
    """output=model/out: the run's own unfinished.safetensors and results (model files by their suffix) were counted
    as the model's, so its every rerun was refused as "the files changed" and never continued."""
    folder = model_folder(tmp_path)
    weights = folder if named == "folder" else folder / "model.safetensors.index.json"
    output = folder / "out"
    model = sorted(f for f in folder.iterdir() if f.is_file())
    before = files_state({"weights": weights}, output)
    output.mkdir()
    (output / UNFINISHED).write_bytes(b"codes")
    (output / "results.json").write_text('{"n": 4}')
    assert read_files(weights.resolve(), output.resolve()) == model
    assert files_state({"weights": weights}, output) == before
    (folder / "model-00001-of-00001.safetensors").write_bytes(b"v" * 65)  # the model itself changed: stated
    assert files_state({"weights": weights}, output) != before


def saved(tmp_path, key: dict) -> None:
    SavedBatches(tmp_path / UNFINISHED, key).add(torch.zeros(2, 4, dtype=torch.long), None)


def refusal(tmp_path, key: dict) -> str:
    with pytest.raises(ConfigError) as refused:
        open_saved(tmp_path, key, 2, overwrite=False)
    return str(refused.value)


def test_a_refusal_for_other_weights_advises_the_rerun_though_their_files_differ(tmp_path):
    """weights=/a there, /b here: the files behind /b differ from /a's as a matter of course, and rerunning the
    saved command (weights=/a) finishes those samples, so the refusal says so. Only where the files alone differ
    (the very command rerun over a newer export) is that no way out: it would be refused again."""
    there = {"weights": "/a", "seed": 0, "files": {"weights": "a"}}
    saved(tmp_path, there)
    other = refusal(tmp_path, {**there, "weights": "/b", "files": {"weights": "b"}})
    assert "(weights='/a' there, '/b' here); rerun that command to finish it, give another output" in other
    files = refusal(tmp_path, {**there, "files": {"weights": "b"}})
    assert "(the files behind weights changed since" in files and "rerun that command" not in files
    assert "); give another output, or overwrite=true to discard them" in files


@pytest.mark.parametrize("changed", [{"files": {"weights": "b"}}, {"real_files": "r2"}])
def test_files_changed_beside_another_setting_advise_no_rerun(tmp_path, changed):
    """seed=0 there, 1 here, and the files behind the same weights (or real_images) changed too: rerunning the saved
    command (seed=0) would be refused for the files, so the refusal must not advise it; it did whenever another
    setting differed beside the files."""
    there = {"weights": "/a", "real_images": "/r", "seed": 0, "files": {"weights": "a"}, "real_files": "r1"}
    saved(tmp_path, there)
    said = refusal(tmp_path, {**there, "seed": 1, **changed})
    assert "seed=0 there, 1 here" in said and "changed since" in said and "rerun that command" not in said


def test_a_missing_path_is_no_entry_of_the_files_state(tmp_path):
    """A key naming no file (clip_weights left out, a tokenizer path not there) states nothing, as keys saved by
    earlier versions did: a digest of no files in its place would refuse their rerun as "the files changed"."""
    model = model_folder(tmp_path)
    state = files_state({"weights": model, "clip_weights": tmp_path / "missing.pt", "tokenizer": None},
                        tmp_path / "out")
    assert list(state) == ["weights"]


def test_a_long_value_is_said_in_at_most_shown_characters():
    """SHOWN bounds the characters of a list's value said, its ellipsis included; a value of exactly SHOWN
    characters is said whole."""
    long = differences({"captions": ["x" * 40, "y" * 40]}, {"captions": []})[1]
    there = long.removeprefix("captions=").split(" there, ")[0]
    assert there == repr(["x" * 40, "y" * 40])[:SHOWN - 1] + "…" and len(there) == SHOWN
    whole = ["z" * (SHOWN - 4)]  # repr: [' + SHOWN - 4 + '] = SHOWN characters
    assert len(repr(whole)) == SHOWN and differences({"c": whole}, {"c": []})[1] == f"c={whole!r} there, [] here"
