"""What `generate` and `evaluate` make of the paths a user may give as `weights`: a model folder's Transformer is the
folder, a run's checkpoint points at its run, and damaged files are one line naming the file (a tiny model folder
written here, no training)."""
import json
import shutil

import pytest
import torch

from megadalle.cli import main
from megadalle.data.digest import sha256
from megadalle.sampling.files import CLIP, DVAE, FORMAT, TOKENIZER, TRANSFORMER, sampling_files
from megadalle.weights import INDEX, MANIFEST, ShardedWriter, export_layout, load_weights
from tests.sample.stopped_generate import stopped_after_one_batch
from tests.tiny_models import write_tiny_models


@pytest.fixture
def folder(tmp_path):
    """A model folder as `export` writes it: the Transformer in shards of 4 kB, and bundle.json."""
    pieces, folder = tmp_path / "pieces", tmp_path / "model"
    pieces.mkdir()
    write_tiny_models(pieces)
    state, config = load_weights(pieces / "model.safetensors")
    writer = ShardedWriter(folder / TRANSFORMER, export_layout(state, torch.float32), "transformer", 4096)
    for name, tensor in state.items():
        writer.add(name, tensor)
    writer.close(config)
    for name in (TOKENIZER, DVAE, "dvae.json", CLIP, "clip.json"):
        shutil.copy(pieces / name, folder / name)
    manifest = {"format": FORMAT, "transformer": TRANSFORMER, "tokenizer": TOKENIZER, "dvae": DVAE, "clip": CLIP,
                "clip_model": "megadalle", "ema": False, "sources": {"tokenizer": str(pieces / TOKENIZER)},
                "sha256": {"tokenizer": sha256(folder / TOKENIZER)}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def generate(weights, tmp_path, *extra):
    return main(["generate", f"weights={weights}", "prompt=a red circle", "n=1", "keep=1",
                 f"output={tmp_path / 'out'}", *extra])


def one_line(capsys, verb="generate"):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.removeprefix(f"megadalle {verb}: ").strip()


@pytest.mark.parametrize("inside", [TRANSFORMER, f"{TRANSFORMER}/{INDEX}"])
def test_a_model_folders_transformer_is_read_as_the_folder(folder, tmp_path, capsys, inside):
    """`weights=model/transformer` read the Transformer alone and took the files beside it: the tokenizer without
    bundle.json's sha256, a CLIP that the folder, exported without one, does not have."""
    assert sampling_files(folder / inside) == sampling_files(folder)
    manifest = json.loads((folder / MANIFEST).read_text())  # the folder's tokenizer is not the one it recorded
    (folder / MANIFEST).write_text(json.dumps({**manifest, "sha256": {"tokenizer": "0" * 64}}))
    assert generate(folder / inside, tmp_path, "rerank=false") == 2
    assert "not the tokenizer the Transformer was trained with" in one_line(capsys)


def test_a_model_folder_named_by_its_transformer_is_the_same_setting(folder, tmp_path, capsys, monkeypatch):
    """`weights=model` then `weights=model/transformer` (read as the folder itself) into one output: "holds an
    earlier generate's results", and a stopped one "an unfinished generate with other settings"; so were a folder
    of shards and its index JSON, which the loader reads as the same files."""
    output = tmp_path / "stopped"
    stopped_after_one_batch(None, output, capsys, monkeypatch, ["generate", f"weights={folder}", "prompt=a red circle",
                                                                 "n=9", "batch_size=3", f"output={output}"])
    assert main(["generate", f"weights={folder / TRANSFORMER}", "prompt=a red circle", "n=9", "batch_size=3",
                 f"output={output}"]) == 0
    assert "[generate] continuing: 3 of 9 samples" in capsys.readouterr().err
    plain = shutil.copytree(folder / TRANSFORMER, tmp_path / "plain")
    for name in (TOKENIZER, DVAE, "dvae.json", CLIP, "clip.json"):
        shutil.copy(folder / name, plain / name)
    for weights, same in ((folder, [folder / TRANSFORMER, folder / TRANSFORMER / INDEX]), (plain, [plain / INDEX])):
        assert generate(weights, tmp_path, "overwrite=true") == 0
        for named in same:
            capsys.readouterr()
            assert generate(named, tmp_path) == 0, capsys.readouterr().err
            assert "done already (same settings); skipped" in capsys.readouterr().out


def test_an_unfinished_folders_transformer_is_said_to_be_unfinished(folder, tmp_path, capsys):
    (folder / MANIFEST).unlink()
    assert generate(folder / TRANSFORMER / INDEX, tmp_path) == 2
    assert one_line(capsys) == (f"{folder}: unfinished export (no bundle.json): rerun `megadalle export` with "
                                f"output={folder}")


def test_a_folder_exported_without_clip_has_none_however_named(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "clip": None}))
    shutil.copy(folder / CLIP, folder / TRANSFORMER / CLIP)  # a CLIP beside the Transformer is not its
    with pytest.raises(Exception, match="was exported without a CLIP: pass rerank=false"):
        sampling_files(folder / TRANSFORMER / INDEX)


def test_a_checkpoint_of_a_run_points_at_the_run(tmp_path, capsys):
    """The export it advises runs as printed: quoted where the path holds a space, and naming the tokenizer and dVAE
    a model folder needs, which this run does not record (placeholders, said what they are)."""
    run = tmp_path / "my run"
    step = run / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    for weights in (step, step / "mp_rank_00_model_states.pt"):
        weights.touch()
        assert generate(weights, tmp_path) == 2
        assert one_line(capsys) == (f"weights={weights}: inside the checkpoints of the training run {run}; pass "
                                    f"'weights={run}' (it samples the newest checkpoint), or to sample step_00000002: "
                                    f"`megadalle export 'run={run}' 'checkpoint={step}' output=DIR tokenizer=TOKENIZER "
                                    "dvae_weights=DVAE`, then weights=DIR (TOKENIZER: the sentencepiece model the run "
                                    "trained with; DVAE: the dVAE weights whose codes the run's token shards hold)")
    assert generate(run / "checkpoints", tmp_path) == 2
    assert one_line(capsys).endswith(f"pass 'weights={run}' (it samples the newest checkpoint)")


def test_a_checkpoints_export_advice_names_the_dvae_generate_was_given(tmp_path, capsys):
    run, dvae = tmp_path / "run", tmp_path / "my dvae.safetensors"
    step = run / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"config": {"data": {"tokenizer": str(tmp_path / "tok.model")}}}))
    assert generate(step, tmp_path, f"dvae_weights={dvae}") == 2
    assert one_line(capsys).endswith(f"`megadalle export run={run} checkpoint={step} output=DIR "
                                     f"tokenizer={tmp_path / 'tok.model'} 'dvae_weights={dvae}'`, then weights=DIR")


@pytest.mark.parametrize("key, factory", [("clip_weights", "megadalle.train.clip:task_from_config"),
                                          ("dvae_weights", "megadalle.train.dvae:task_from_config")])
def test_a_checkpoint_of_a_clip_or_dvae_run_points_at_the_run_by_its_key(folder, tmp_path, capsys, key, factory):
    """`clip_weights=RUN/checkpoints/step_N` was "holds neither model.safetensors.index.json nor model.safetensors",
    naming neither the key nor the run; such a run is exported as one file."""
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_00000006"
    step.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"task_factory": factory}))
    assert generate(folder, tmp_path, f"{key}={step}") == 2
    assert one_line(capsys) == (f"{key}={step}: inside the checkpoints of the training run {run}; pass {key}={run} "
                                f"(it reads the newest checkpoint), or to read step_00000006: `megadalle export "
                                f"run={run} checkpoint={step} output=FILE.safetensors`, then {key}=FILE.safetensors")


@pytest.mark.parametrize("key, factory", [("clip_weights", "megadalle.train.clip:task_from_config"),
                                          ("dvae_weights", "megadalle.train.dvae:task_from_config")])
def test_a_clip_or_dvae_run_given_as_weights_is_said_to_be_one_first(tmp_path, capsys, key, factory):
    """It was "no dvae.safetensors beside RUN", and once a dVAE was given, "a 'clip' training run"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"task_factory": factory}))
    model = "CLIP" if key == "clip_weights" else "dVAE"
    for verb in ("generate", "evaluate"):
        extra = ["prompt=a red circle"] if verb == "generate" else [f"captions={tmp_path / 'c.txt'}", "fid=false"]
        (tmp_path / "c.txt").write_text("a red circle\n")
        assert main([verb, f"weights={run}", *extra, f"output={tmp_path / verb}"]) == 2
        assert one_line(capsys, verb) == (f"weights={run}: a {model} training run, not a Transformer's; it is read as "
                                          f"{key}={run} beside the Transformer's weights")


def cut(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def garble(path):
    path.write_text(path.read_text()[:-3])


def gone(path):
    path.unlink()
    return path


def first_shard(folder):
    return sorted((folder / TRANSFORMER).glob("model-*.safetensors"))[0]


def last_shard(folder):
    return sorted((folder / TRANSFORMER).glob("model-*.safetensors"))[-1]


def listed_not_there(folder):
    index = folder / TRANSFORMER / INDEX
    record = json.loads(index.read_text())
    record["weight_map"]["extra"] = "model-00009-of-00009.safetensors"
    index.write_text(json.dumps(record))
    return folder / TRANSFORMER / "model-00009-of-00009.safetensors"


def edit_index(folder, edit):
    index = folder / TRANSFORMER / INDEX
    record = json.loads(index.read_text())
    edit(record["weight_map"])
    index.write_text(json.dumps(record))
    return index


def add_tensor(shard, name, tensor):
    from safetensors.torch import load_file, save_file

    save_file({**load_file(str(shard)), name: tensor}, str(shard), metadata={"format": "pt"})
    return shard


def in_two_shards(folder):
    """A tensor of the first shard copied into the last, +1: the loader took whichever came last."""
    name = next(n for n, shard in index_map(folder).items() if shard == first_shard(folder).name)
    return add_tensor(last_shard(folder), name, load_weights(folder / TRANSFORMER)[0][name] + 1)


def index_map(folder):
    return json.loads((folder / TRANSFORMER / INDEX).read_text())["weight_map"]


def in_another_shard(folder):
    """The index says the last shard holds a tensor the first one holds (the first shard's only one)."""
    name = next(n for n, shard in index_map(folder).items() if shard == first_shard(folder).name)
    edit_index(folder, lambda weight_map: weight_map.update({name: last_shard(folder).name}))
    return last_shard(folder)


def in_no_shard(folder):
    edit_index(folder, lambda weight_map: weight_map.update({"extra.weight": first_shard(folder).name}))
    return first_shard(folder)


def double_n_hid(folder):
    record = json.loads((folder / "dvae.json").read_text())
    record["config"]["n_hid"] *= 2
    (folder / "dvae.json").write_text(json.dumps(record))
    return folder / DVAE


def tensor_added_and_listed(folder):
    add_tensor(last_shard(folder), "extra.weight", torch.zeros(2))
    return edit_index(folder, lambda weight_map: weight_map.update({"extra.weight": last_shard(folder).name}))


DAMAGE = {  # name: (damage the folder, return the file named)
    "shard cut short": lambda f: (cut(last_shard(f)), last_shard(f))[1],
    "shard gone": lambda f: gone(first_shard(f)),
    "index names a shard not there": listed_not_there,
    "index garbled": lambda f: (garble(f / TRANSFORMER / INDEX), f / TRANSFORMER / INDEX)[1],
    "config.json garbled": lambda f: (garble(f / TRANSFORMER / "config.json"), f / TRANSFORMER / "config.json")[1],
    "bundle.json garbled": lambda f: (garble(f / MANIFEST), f / MANIFEST)[1],
    "dvae.json empty": lambda f: ((f / "dvae.json").write_text("{}"), f / "dvae.json")[1],
    "dvae cut short": lambda f: (cut(f / DVAE), f / DVAE)[1],
    "clip cut short": lambda f: (cut(f / CLIP), f / CLIP)[1],
    # the tensors against the index: these loaded, reading a tensor from the wrong shard, or none
    "a tensor in two shards": in_two_shards,
    "a tensor in another shard than the index says": in_another_shard,
    "a tensor the index lists in no shard": in_no_shard,
    "index names no tensor": lambda f: edit_index(f, dict.clear),  # IndexError
    # the tensors against the config JSON: load_state_dict's traceback
    "dvae.json of another n_hid": double_n_hid,
    "a tensor added": tensor_added_and_listed,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_weights_are_one_line_naming_the_file(folder, tmp_path, capsys, damage):
    """They were tracebacks (SafetensorError, FileNotFoundError, JSONDecodeError), exit code 1."""
    assert first_shard(folder) != last_shard(folder)
    named = DAMAGE[damage](folder)
    assert generate(folder, tmp_path) == 2
    message = one_line(capsys)
    assert message.startswith(f"{named}: ") and message.endswith(
        "; re-export the weights, or copy this file again from where it came"), message
    assert not (tmp_path / "out").exists()


def test_evaluate_names_a_damaged_shard_as_generate_does(folder, tmp_path, capsys):
    cut(last_shard(folder))
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n")
    assert main(["evaluate", f"weights={folder}", f"captions={captions}", "fid=false", "n=1",
                 f"output={tmp_path / 'eval'}"]) == 2
    assert one_line(capsys, "evaluate").startswith(f"{last_shard(folder)}: not a whole safetensors file")


@pytest.mark.parametrize("content", ["cut", "code", "list"])
def test_an_open_clip_weights_file_that_is_no_state_dict_is_one_line(tmp_path, content):
    """A cut file gave safetensors' or torch's error naming no file; a pickled model, torch's multi-line refusal."""
    from megadalle.sampling.rerank import RerankerError, read_state_dict

    path = tmp_path / ("clip.safetensors" if content == "cut" else "clip.pt")
    if content == "cut":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(64)}, str(path))
        path.write_bytes(path.read_bytes()[:40])
    else:
        torch.save(torch.nn.Linear(2, 2) if content == "code" else [torch.zeros(2)], path)
    with pytest.raises(RerankerError) as refused:
        read_state_dict(path)
    assert str(refused.value).startswith(f"clip_weights={str(path)!r}: ") and "\n" not in str(refused.value)


def test_encodes_dvae_of_another_config_is_one_damaged_line(folder):
    """`load_dvae` (encode, the sample grids, the demo) loaded strictly after reading every tensor: a dvae.json
    that does not fit its weights was load_state_dict's RuntimeError, not the line generate gives."""
    from megadalle.models.dvae import load_dvae
    from megadalle.weights.errors import WeightsDamaged

    named = double_n_hid(folder)
    with pytest.raises(WeightsDamaged, match=f"^{named}: "):
        load_dvae(named)


def test_a_dvae_exported_in_bf16_encodes_in_fp32(folder, tmp_path):
    """Built on the meta device and given the file's tensors, the dVAE would otherwise be the file's dtype."""
    from megadalle.models.dvae import load_dvae
    from megadalle.weights import save_weights

    state, config = load_weights(folder / DVAE)
    save_weights(tmp_path / "dvae16.safetensors", {name: t.to(torch.bfloat16) for name, t in state.items()}, "dvae",
                 config)
    dvae = load_dvae(tmp_path / "dvae16.safetensors")
    assert {p.dtype for p in dvae.state_dict().values() if p.is_floating_point()} == {torch.float32}
