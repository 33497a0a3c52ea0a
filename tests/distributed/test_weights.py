"""megadalle.weights: the sharded folder and the single file both read back by `load_weights` and
`load_model` (what `generate` uses), from the folder, its index JSON or the file; clear refusals."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from megadalle import bundle_write, export
from megadalle.config.compose import compose

from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.processes import owner_tag
from megadalle.sampling.load import beside, load_model
from megadalle.weights import INDEX, ShardedWriter, SingleFileWriter, export_layout, load_weights, save_weights

CFG = TransformerConfig(text_len=8, text_vocab=64, grid_size=4, image_vocab=16, n_layers=2, n_heads=2, head_dim=8,
                        d_model=16, conv_kernel=3, attention_pattern=["row", "column"])


def write_folder(path, state, dtype=torch.float32, max_shard_bytes=4096):
    writer = ShardedWriter(path, export_layout(state, dtype), "transformer", max_shard_bytes)
    for name, tensor in state.items():
        writer.add(name, tensor)
    return writer.close(CFG)


def test_every_form_loads_the_same_model(tmp_path):
    model = Transformer(CFG)
    state = model.state_dict()
    folder = write_folder(tmp_path / "model", state)
    save_weights(tmp_path / "one.safetensors", state, "transformer", CFG)
    assert len(json.loads((folder / INDEX).read_text())["weight_map"]) == len(state)
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    for source in (folder, folder / INDEX, tmp_path / "one.safetensors"):
        loaded, config = load_weights(source, kind="transformer")
        assert config["d_model"] == 16 and all(torch.equal(loaded[k], v) for k, v in state.items())
        rebuilt = load_model(source, "transformer")
        assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in state.items())
        assert not any(t.is_meta for t in rebuilt.state_dict().values())


def test_bf16_folder_and_neighbours(tmp_path):
    state = Transformer(CFG).state_dict()
    folder = write_folder(tmp_path / "model", state, torch.bfloat16)
    loaded, _ = load_weights(folder)
    assert all(loaded[k].dtype == torch.bfloat16 and torch.equal(loaded[k], v.bfloat16()) for k, v in state.items())
    assert all(t.dtype == torch.float32 for t in load_model(folder, "transformer").state_dict().values())
    half = load_model(folder, "transformer", dtype=torch.bfloat16).state_dict()  # generate's default on GPUs
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], v.bfloat16()) for k, v in state.items())
    upcast, _ = load_weights(folder, dtype=torch.float32)
    assert all(upcast[k].dtype == torch.float32 and torch.equal(upcast[k], v.bfloat16().float())
               for k, v in state.items())
    (tmp_path / "dvae.safetensors").write_bytes(b"")  # generate finds dvae/clip beside a weights folder
    assert beside(folder, None, "dvae.safetensors") == tmp_path / "dvae.safetensors"


def test_refusals(tmp_path):
    state = Transformer(CFG).state_dict()
    folder = write_folder(tmp_path / "model", state)
    with pytest.raises(ValueError, match="holds a 'transformer' model, not a 'dvae' model"):
        load_weights(folder, kind="dvae")
    with pytest.raises(FileNotFoundError, match="holds neither"):
        load_weights(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="neither empty nor an exported weights folder"):
        write_folder(tmp_path / "other", state)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine" and not list(tmp_path.glob("other.tmp-*"))
    write_folder(folder, {"only": torch.zeros(3)})  # a previous export is replaced whole
    assert set(load_weights(folder)[0]) == {"only"}


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_exports_temporary_goes_at_the_next_export(tmp_path, monkeypatch, capsys):
    """A killed export leaves `<target>.tmp-<host>-<pid>`, as large as the model: the next export of that target
    removes it. A live export's (its process exists) and another machine's are left alone; the model folder's
    listing never shows a temporary."""
    state = Transformer(CFG).state_dict()
    host = socket.gethostname()
    stale_file = tmp_path / f"one.safetensors.tmp-{host}-{dead_pid()}"
    stale_folder = tmp_path / f"model.tmp-{host}-{dead_pid()}"
    absurd = tmp_path / f"model.tmp-{host}-{10 ** 30}"  # no pid: os.kill raised OverflowError
    live, elsewhere = tmp_path / f"model.tmp-{host}-{os.getppid()}", tmp_path / "model.tmp-otherhost-1"
    start = int(owner_tag().rpartition(".")[2])
    restarted = tmp_path / f"model.tmp-{host}-{os.getpid()}.{start - 1}"  # this pid's, an earlier start: a restart
    stale_file.write_bytes(b"x" * 100)
    for folder in (stale_folder, absurd, live, elsewhere, restarted):
        folder.mkdir()
        (folder / "model-00001-of-00001.safetensors").write_bytes(b"x" * 100)
    write_folder(tmp_path / "model", state)
    writer = SingleFileWriter(tmp_path / "one.safetensors", export_layout(state, torch.float32), "transformer")
    for name, tensor in state.items():
        writer.add(name, tensor)
    writer.close(CFG)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model", "one.safetensors", "one.json", live.name, elsewhere.name])

    (tmp_path / "transformer").mkdir()  # the folder's own pieces beside a live export's temporary of one of them
    (tmp_path / "tokenizer.model").write_bytes(b"x")
    (tmp_path / f"transformer.tmp-{host}-{os.getppid()}").mkdir()
    monkeypatch.setattr(bundle_write, "write_bundle", lambda *args: tmp_path)
    transformer = type("T", (), {"export_spec": lambda self: type("S", (), {"kind": "transformer"})()})()
    monkeypatch.setattr(export, "run_task", lambda run: (transformer, {}))  # no run here: the listing is tested
    assert export.run(compose("export", [f"run={tmp_path}", f"output={tmp_path / 'folder'}"])) == 0
    assert capsys.readouterr().err.endswith(": tokenizer.model, transformer\n")


def test_a_folder_is_loaded_reading_its_index_and_config_once(tmp_path, monkeypatch):
    """load_into parsed config.json twice and the index (a line per tensor) three times before reading a tensor."""
    from megadalle.weights import load

    folder = write_folder(tmp_path / "model", Transformer(CFG).state_dict())
    real, records = load.read_record, []
    monkeypatch.setattr(load, "read_record", lambda path, *keys: records.append(path.name) or real(path, *keys))
    load_model(folder, "transformer")
    assert sorted(records) == sorted(["config.json", INDEX])
