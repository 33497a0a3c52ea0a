"""One exported .safetensors file replaces only earlier weights of its kind, and its `<stem>.json` only that kind's
config: `export output=dvae.safetensors` of a Transformer run, or onto a user's file or JSON, overwrote them."""
import pytest
import torch

from megadalle.preflight.probes import PreflightError, export_target
from megadalle.weights import (OutputInTheWay, ShardedWriter, SingleFileWriter, check_replaceable, export_layout,
                               load_weights, save_weights)

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def write(path, kind, state=STATE):
    writer = SingleFileWriter(path, export_layout(state, torch.float32), kind)
    for name, tensor in state.items():
        writer.add(name, tensor)
    return writer.close({"width": 3})


def contents(folder):
    return {p.name: p.is_dir() or p.read_bytes() for p in folder.iterdir()}


def test_an_earlier_export_of_the_same_kind_is_replaced(tmp_path):
    path = tmp_path / "model.safetensors"
    write(path, "transformer")
    write(path, "transformer", {"w": torch.ones(2, 3)})
    state, config = load_weights(path, "transformer")
    assert torch.equal(state["w"], torch.ones(2, 3)) and config == {"width": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("kind, message", [
    (None, r"exists and is no weights file an export wrote"),
    ("dvae", r"holds the weights of a 'dvae' model, and this export writes a 'transformer' one"),
    ("format", r"exists and is no weights file an export wrote"),  # another tool's, header metadata without kind
])
def test_a_file_that_is_not_weights_of_the_kind_is_left_as_it_is(tmp_path, kind, message):
    path = tmp_path / "dvae.safetensors"
    if kind is None:
        path.write_text("my notes")
    elif kind == "format":
        from safetensors.torch import save_file
        save_file(STATE, str(path), metadata={"format": "pt"})
    else:
        save_weights(path, STATE, kind, {"width": 3})
    before = contents(tmp_path)
    with pytest.raises(OutputInTheWay, match=f"^output={path}: {message}.*; give another path, or remove it$"):
        write(path, "transformer")
    assert contents(tmp_path) == before


@pytest.mark.parametrize("record", ['{"a": 1}', "not json", '{"kind": "dvae", "config": {}}', "[1]"])
def test_a_json_beside_that_is_not_the_kinds_config_is_left_as_it_is(tmp_path, record):
    path, mine = tmp_path / "foo.safetensors", tmp_path / "foo.json"
    mine.write_text(record)
    with pytest.raises(OutputInTheWay, match=f"{mine} is there and is not the config JSON of a 'transformer' "
                                             f"model.*; give another path, or remove {mine}$"):
        write(path, "transformer")
    assert contents(tmp_path) == {"foo.json": record.encode()}
    write(tmp_path / "bar.safetensors", "dvae")  # a config JSON of the kind, without its weights, is replaced
    (tmp_path / "bar.safetensors").unlink()
    write(tmp_path / "bar.safetensors", "dvae")


def test_the_kind_unknown_yet_takes_any_exports_weights_only(tmp_path):
    """`export` checks its output before it reads the run (kind None), the writer again with the run's kind."""
    weights, notes = tmp_path / "clip.safetensors", tmp_path / "notes.safetensors"
    save_weights(weights, STATE, "clip", {"width": 3})
    notes.write_bytes(b"\0" * 64)
    check_replaceable(weights)
    with pytest.raises(OutputInTheWay, match="is no weights file an export wrote"):
        check_replaceable(notes)
    (tmp_path / "clip.json").write_text('{"kind": "dvae", "config": {}}')  # not the weights' own config
    with pytest.raises(OutputInTheWay, match="is not the config JSON of a 'clip' model"):
        check_replaceable(weights)


def test_train_dvae_and_train_clip_weights_are_checked_before_training(tmp_path):
    dvae, mine = tmp_path / "dvae.safetensors", tmp_path / "mine.safetensors"
    save_weights(dvae, STATE, "dvae", {"width": 3})
    mine.write_text("mine")
    with pytest.raises(PreflightError, match=f"^weights={mine}: exists and is no weights file an export wrote"):
        export_target(str(mine))
    export_target(str(dvae), "dvae")
    with pytest.raises(PreflightError, match=f"^weights={dvae}: holds the weights of a 'dvae' model, and this "
                                             "export writes a 'clip' one"):
        export_target(str(dvae), "clip")


@pytest.mark.parametrize("verb, kind", [("train-dvae", "clip"), ("train-clip", "dvae")])
def test_a_training_verbs_weights_of_another_kind_are_refused_before_it_trains(tmp_path, capsys, verb, kind):
    """Preflight passed such a file, and the run was refused only at its export, once it had trained."""
    from megadalle.cli import main

    other = tmp_path / "other.safetensors"
    save_weights(other, STATE, kind, {"width": 3})
    needs = ["tokenizer=none.model"] if verb == "train-clip" else []
    assert main([verb, "data.shards=nowhere", *needs, f"weights={other}"]) == 2
    assert f"weights={other}: holds the weights of a '{kind}' model" in capsys.readouterr().err


def test_export_refuses_one_file_of_another_kind_before_it_chooses_a_checkpoint(tmp_path, monkeypatch):
    from megadalle.train import consolidate

    dvae = tmp_path / "dvae.safetensors"
    save_weights(dvae, STATE, "dvae", {"width": 3})
    monkeypatch.setattr(consolidate, "run_task", lambda run: (type("T", (), {
        "export_spec": lambda self: type("S", (), {"kind": "transformer"})()})(), {"trainer": {"ema": None}}))
    monkeypatch.setattr(consolidate, "checkpoint_dir", lambda *a: pytest.fail("a checkpoint was chosen"))
    with pytest.raises(OutputInTheWay, match="holds the weights of a 'dvae' model"):
        consolidate.export(tmp_path / "run", dvae)


def write_folder(folder, kind, state=STATE):
    writer = ShardedWriter(folder, export_layout(state, torch.float32), kind, max_shard_bytes=24)
    for name, tensor in state.items():
        writer.add(name, tensor)
    return writer.close({"width": 3})


TWO = {"w": torch.zeros(2, 3), "v": torch.ones(2, 3)}


@pytest.mark.parametrize("extra", [["README.md"], ["README.md", "tokenizer.json"], ["notes/"]])
def test_a_weights_folder_holding_other_files_is_left_as_it_is(tmp_path, extra):
    """A folder holding an index was taken for an earlier export and deleted whole: a model card added to an
    export, a Hugging Face model folder's tokenizer went with it."""
    folder = write_folder(tmp_path / "weights", "transformer", TWO)
    for name in extra:
        (folder / name).mkdir() if name.endswith("/") else (folder / name).write_text("mine")
    before = contents(folder)
    them = "it" if len(extra) == 1 else "them"
    with pytest.raises(OutputInTheWay, match=f"^output={folder}: holds files an export does not write "
                                             f"\\({', '.join(sorted(extra))}\\), which replacing the folder would "
                                             f"delete; give another path, or move {them} out$"):
        write_folder(folder, "transformer")
    assert contents(folder) == before and not list(tmp_path.glob("*.tmp-*"))


def test_an_index_no_export_wrote_or_of_another_kind_is_not_replaced(tmp_path):
    """A folder of exported dVAE weights was replaced by a Transformer's without a word (one file of another kind
    was refused); a Hugging Face folder's index records no kind."""
    dvae = write_folder(tmp_path / "dvae", "dvae", TWO)
    before = contents(dvae)
    with pytest.raises(OutputInTheWay, match="holds the weights of a 'dvae' model, and this export writes a "
                                             "'transformer' one"):
        write_folder(dvae, "transformer")
    check_replaceable(dvae)  # the kind not known yet: any export's
    assert contents(dvae) == before
    write_folder(dvae, "dvae")  # the same kind's earlier export is replaced, whole
    assert sorted(p.name for p in dvae.iterdir()) == ["config.json", "model-00001-of-00001.safetensors",
                                                      "model.safetensors.index.json"]
    index = dvae / "model.safetensors.index.json"
    index.write_text('{"metadata": {"total_size": 24}, "weight_map": {"w": "model-00001-of-00001.safetensors"}}')
    with pytest.raises(OutputInTheWay, match="holds a model.safetensors.index.json that records no model kind"):
        check_replaceable(dvae)


def metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_every_exported_file_says_its_format_as_hugging_faces_loaders_require(tmp_path):
    """One-file exports (train-dvae's, train-clip's, import-dvae's, a bundle's dvae/clip) recorded only their kind:
    huggingface_hub, transformers and accelerate refuse a file without "format": "pt"."""
    saved, streamed = save_weights(tmp_path / "a.safetensors", STATE, "dvae", {"width": 3}), write(
        tmp_path / "b.safetensors", "clip")
    folder = write_folder(tmp_path / "shards", "transformer", TWO)
    assert metadata(saved) == {"format": "pt", "kind": "dvae"}
    assert metadata(streamed) == {"format": "pt", "kind": "clip"}
    assert all(metadata(shard) == {"format": "pt"} for shard in folder.glob("model-*.safetensors"))
    hub = pytest.importorskip("huggingface_hub")
    for path in (saved, streamed):
        assert torch.equal(hub.load_state_dict_from_file(str(path))["w"], STATE["w"])


def test_files_written_before_the_format_was_recorded_still_read_and_are_replaced(tmp_path):
    from safetensors.torch import save_file

    old = tmp_path / "dvae.safetensors"
    save_file(STATE, str(old), metadata={"kind": "dvae"})
    (tmp_path / "dvae.json").write_text('{"kind": "dvae", "config": {"width": 3}}')
    state, config = load_weights(old, "dvae")
    assert torch.equal(state["w"], STATE["w"]) and config == {"width": 3}
    write(old, "dvae")
    assert metadata(old) == {"format": "pt", "kind": "dvae"}


def test_a_model_folder_or_a_file_in_it_is_never_offered_for_removal(tmp_path):
    """`give another path, or remove it` invited deleting a model folder, or its Transformer, that train-clip's
    `weights=` or an export named: the folder's own export rewrites it whole, and that is the way offered."""
    folder = tmp_path / "model"
    write_folder(folder / "transformer", "transformer")
    save_weights(folder / "dvae.safetensors", STATE, "dvae", {"width": 3})
    (folder / "tokenizer.model").write_text("pieces")
    (folder / "bundle.json").write_text('{"transformer": "transformer"}')
    (folder / "transformer" / "README.md").write_text("my card")
    before = contents(folder)
    way = (f"; give another path; the model folder {folder} is rewritten whole, from its Transformer's run, by "
           f"`megadalle export run=RUN output={folder}` (RUN: its Transformer's training run)")
    with pytest.raises(OutputInTheWay) as refused:  # the folder's own Transformer, which its export writes
        check_replaceable(folder / "transformer", kind="transformer")
    assert str(refused.value).startswith(f"output={folder / 'transformer'}: holds files") and str(
        refused.value).endswith(way)
    for target, kind, what in ((folder, None, "Transformer"), (folder / "transformer", "clip", "CLIP"),
                               (folder / "dvae.safetensors", "clip", "CLIP")):
        with pytest.raises(OutputInTheWay) as refused:  # any other writer is kept out of the folder altogether
            check_replaceable(target, kind=kind)
        assert str(refused.value).startswith(f"output={target}: ") and f" a {what} exported alone " in str(
            refused.value) and f"`megadalle export run=RUN output={folder}" in str(refused.value)
        assert "remove" not in str(refused.value)
    with pytest.raises(PreflightError, match=f"^weights={folder / 'transformer'}: inside the model folder {folder}, "
                                             "whose Transformer and bundle.json a CLIP exported alone"):
        export_target(str(folder / "transformer"), "clip")
    assert contents(folder) == before
    elsewhere = write_folder(tmp_path / "weights", "dvae")  # outside a model folder, the advice stays
    with pytest.raises(OutputInTheWay, match="; give another path, or remove it$"):
        check_replaceable(elsewhere, kind="clip")
