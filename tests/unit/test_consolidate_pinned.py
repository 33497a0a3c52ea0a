"""What export and load_run hand a user (train/consolidate.py), pinned where mutation testing found it unchecked by
the single-process tests: which weights `ema` picks, the weights read from each layout's files (planted here, the
reference the tensors planted), the refusals of tensors that do not fit the model, and the choice of checkpoint
when the one being read goes or is damaged."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from megadalle.sampling.load import WrongKind
from megadalle.train import consolidate
from megadalle.train.checkpoint import MANIFEST, CheckpointError
from megadalle.train.consolidate import checked, checkpoint_tensors, chosen_ema, read_checkpoint
from megadalle.train.zip_crc import DamagedRecord
from tests.unit.adam_net import model


@pytest.mark.parametrize("config, asked, reads_ema", [
    ({"trainer": {"ema": 0.5}}, None, True), ({"trainer": {"ema": 0.5}}, False, False),
    ({"trainer": {"ema": 0.5}}, True, True), ({"trainer": {"ema": None}}, None, False),
    ({"trainer": {"ema": None}}, False, False), ({}, None, False), ({}, True, True), ({}, False, False)])
def test_ema_auto_reads_the_ema_where_the_run_trained_one_and_a_given_choice_stands(config, asked, reads_ema):
    assert chosen_ema("RUN", config, asked) is reads_ema


def test_ema_true_of_a_run_without_one_is_refused_naming_the_run():
    with pytest.raises(CheckpointError, match="ema=true: RUN trained without an EMA .*drop ema=true"):
        chosen_ema("RUN", {"trainer": {"ema": None}}, True)


def unfused_stage0(path, dtype=torch.bfloat16):
    """A ZeRO stage-0 bf16 checkpoint of adam_net's model as DeepSpeed's FP16_UnfusedOptimizer saves it: module weights
    (under the engine's `model.` prefix) in bf16, one fp32 master a parameter, by group (matrices, then the rest), in
    the model's order. Returns the net and the masters by plain name, each a little off its bf16 weight."""
    net = model().to(dtype)
    torch.manual_seed(3)
    masters = {name: p.detach().float() + 1e-3 * torch.randn(p.shape) for name, p in net.named_parameters()}
    groups = [["0.weight", "2.weight"], ["0.bias", "1.weight", "1.bias", "2.bias"]]
    torch.save({"module": {f"model.{name}": t for name, t in net.state_dict().items()},
                "optimizer": {"fp32_groups": [[masters[name] for name in group] for group in groups]}},
               path / "mp_rank_00_model_states.pt")
    return net, masters


def test_an_fp32_export_of_a_bf16_stage0_run_reads_each_master_under_its_own_name(tmp_path):
    net, masters = unfused_stage0(tmp_path)
    fp32 = dict(checkpoint_tensors(None, net, tmp_path, dtype=torch.float32))
    assert fp32.keys() == masters.keys()
    for name, master in masters.items():
        assert fp32[name].dtype == torch.float32 and torch.equal(fp32[name], master), name
    bf16 = dict(checkpoint_tensors(None, net, tmp_path, dtype=torch.bfloat16))
    assert all(torch.equal(bf16[name], weight) for name, weight in net.state_dict().items())


def test_masters_grouped_otherwise_than_the_model_are_refused(tmp_path):
    net, _ = unfused_stage0(tmp_path)
    states = torch.load(tmp_path / "mp_rank_00_model_states.pt", weights_only=True)
    states["optimizer"]["fp32_groups"][1].pop()
    torch.save(states, tmp_path / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=r"fp32 groups hold \[2, 3\] tensors, the model's parameter groups "
                                              r"\[2, 4\]"):
        list(checkpoint_tensors(None, net, tmp_path, dtype=torch.float32))


def test_an_fp32_run_is_exported_from_its_module_weights_named_without_the_engines_prefix(tmp_path):
    net = model()
    torch.save({"module": {f"model.{name}": t for name, t in net.state_dict().items()}},
               tmp_path / "mp_rank_00_model_states.pt")
    read = dict(checkpoint_tensors(None, net, tmp_path, dtype=torch.float32))
    assert read.keys() == net.state_dict().keys()
    assert all(torch.equal(read[name], t) for name, t in net.state_dict().items())


def test_a_checkpoint_without_weights_is_refused_by_what_it_lacks(tmp_path):
    torch.save({"module": {}}, tmp_path / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path} holds neither module weights nor ZeRO optimizer shards"):
        list(checkpoint_tensors(None, model(), tmp_path))


def pipeline(path, net):
    """A pipeline checkpoint of `net` (its layers `0`, `1`, `2` the stages' layers): each layer's own keys."""
    for i, layer in enumerate(net):
        torch.save(layer.state_dict(), path / f"layer_{i:02d}-model_states.pt")
    return SimpleNamespace(pipeline=lambda: SimpleNamespace(layer_names=[str(i) for i in range(len(net))]))


def test_a_pipeline_checkpoint_reads_every_layer_under_the_plain_models_names(tmp_path):
    net = model()
    read = dict(checkpoint_tensors(pipeline(tmp_path, net), net, tmp_path, dtype=torch.float32))
    assert read.keys() == net.state_dict().keys()
    assert all(torch.equal(read[name], t) for name, t in net.state_dict().items())


def test_a_pipeline_layer_holding_a_key_its_layer_lacks_is_refused_by_name(tmp_path):
    net = model()
    task = pipeline(tmp_path, net)
    torch.save({**net[1].state_dict(), "scale": torch.ones(1)}, tmp_path / "layer_01-model_states.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path}: layer 1 holds scale, which the model's layer 1 does not"):
        list(checkpoint_tensors(task, net, tmp_path, dtype=torch.float32))


def test_checked_refuses_an_unknown_tensor_a_wrong_shape_and_a_missing_tensor_by_name(tmp_path):
    net = model()
    state = net.state_dict()
    with pytest.raises(CheckpointError, match=f"{tmp_path} holds 3.weight, which the run's model does not have"):
        list(checked(net, iter([*state.items(), ("3.weight", torch.zeros(1))]), tmp_path))
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: 2.bias has shape \(5,\), the model \(4,\)"):
        list(checked(net, iter([*state.items()][:-1] + [("2.bias", torch.zeros(5))]), tmp_path))
    with pytest.raises(CheckpointError, match=rf"{tmp_path} lacks 1 of the model's tensors, e.g. \['1.bias'\]"):
        list(checked(net, iter([(k, v) for k, v in state.items() if k != "1.bias"]), tmp_path))
    assert [name for name, _ in checked(net, iter(state.items()), tmp_path)] == list(state)


@pytest.fixture
def run(tmp_path):
    """A run directory with three complete (empty) checkpoints, steps 1 to 3."""
    (tmp_path / "run.json").write_text("{}")
    for step in (1, 2, 3):
        folder = tmp_path / "checkpoints" / f"step_{step:08d}"
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(json.dumps({"files": {}}))
    return tmp_path


def step(run, n):
    return run / "checkpoints" / f"step_{n:08d}"


def test_a_damaged_file_names_the_newest_complete_checkpoint_before_it(run):
    def read(path):
        raise DamagedRecord(f"{path}/x.pt: record y fails its CRC-32")

    with pytest.raises(CheckpointError, match=f"fails its CRC-32; use {step(run, 2)} instead$"):
        read_checkpoint(run, None, read, lambda older: f"use {older} instead")
    with pytest.raises(CheckpointError, match="fails its CRC-32; use .*step_00000001 instead$"):
        read_checkpoint(run, step(run, 2), read, lambda older: f"use {older} instead")


def test_a_checkpoint_pruned_while_read_is_read_again_from_the_newest(run, capsys):
    """A run still training pruned step 3 while it was read, then step 2: the third attempt reads step 1."""
    tried = []

    def read(path):
        tried.append(path.name)
        if path.name != "step_00000001":
            (path / MANIFEST).unlink()
            raise FileNotFoundError(path / "mp_rank_00_model_states.pt")
        return "weights"

    assert read_checkpoint(run, None, read, str) == "weights"
    assert tried == ["step_00000003", "step_00000002", "step_00000001"]
    assert f"{step(run, 3)} went while it was read" in capsys.readouterr().err


def test_a_failed_read_of_a_checkpoint_still_complete_is_no_pruning_and_is_not_retried(run):
    tried = []

    def read(path):
        tried.append(path.name)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        read_checkpoint(run, None, read, str)
    assert tried == ["step_00000003"]


def test_a_given_checkpoint_pruned_while_read_is_refused_by_name_not_replaced(run):
    tried = []

    def read(path):
        tried.append(path.name)
        (path / MANIFEST).unlink()
        raise FileNotFoundError(path / "mp_rank_00_model_states.pt")

    with pytest.raises(CheckpointError, match=f"checkpoint={step(run, 2)} went while it was read"):
        read_checkpoint(run, step(run, 2), read, str)
    assert tried == ["step_00000002"]


def test_an_fp32_buffer_beside_bf16_weights_still_reads_the_masters(tmp_path):
    """A bf16 run may keep a buffer in fp32: its weights are still bf16, and an fp32 export reads their masters."""
    net, masters = unfused_stage0(tmp_path)
    states = torch.load(tmp_path / "mp_rank_00_model_states.pt", weights_only=True)
    states["module"]["model.scale"] = torch.ones(2)
    torch.save(states, tmp_path / "mp_rank_00_model_states.pt")
    fp32 = dict(checkpoint_tensors(None, net, tmp_path, dtype=torch.float32))
    assert all(torch.equal(fp32[name], master) for name, master in masters.items())
    assert torch.equal(fp32["scale"], torch.ones(2))


def test_ema_true_of_a_checkpoint_without_ema_files_says_how_to_read_the_live_weights(tmp_path):
    unfused_stage0(tmp_path)
    with pytest.raises(CheckpointError, match=f"the EMA weights: {tmp_path} holds no EMA files .*; ema=false reads "
                                              "the live weights$"):
        list(checkpoint_tensors(None, model(), tmp_path, ema=True))


def planted_run(root, net):
    """A run directory whose one complete checkpoint (step 1) holds `net`'s weights as ZeRO 0-2 save them."""
    folder = root / "checkpoints" / "step_00000001"
    folder.mkdir(parents=True)
    (root / "run.json").write_text("{}")
    torch.save({"module": {f"model.{name}": t for name, t in net.state_dict().items()}},
               folder / "mp_rank_00_model_states.pt")
    size = (folder / "mp_rank_00_model_states.pt").stat().st_size
    (folder / MANIFEST).write_text(json.dumps({"files": {"mp_rank_00_model_states.pt": size}}))
    return folder


@pytest.fixture
def stub_run(tmp_path, monkeypatch):
    """(run dir, the net its checkpoint holds): its task (adam_net's model, a Transformer's run) stood in for."""
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    planted_run(tmp_path, net)
    task = SimpleNamespace(build_model=model, export_spec=lambda: SimpleNamespace(kind="transformer"))
    monkeypatch.setattr(consolidate, "run_task", lambda run_dir: (task, {"trainer": {"ema": None}}))
    return tmp_path, net


def test_load_run_gives_the_checkpoints_weights_in_the_dtype_asked_in_eval_mode(stub_run):
    run, net = stub_run
    for dtype in (torch.float32, torch.bfloat16):
        loaded, _ = consolidate.load_run(run, dtype=dtype)
        assert not any(module.training for module in loaded.modules())
        state = loaded.state_dict()
        assert state.keys() == net.state_dict().keys()
        for name, weight in net.state_dict().items():
            assert state[name].dtype == dtype and torch.equal(state[name], weight.to(dtype)), name


def test_load_run_refuses_another_kind_of_run_by_name(stub_run):
    run, _ = stub_run
    with pytest.raises(WrongKind, match=f"{run} is a 'transformer' training run, not a 'dvae' one"):
        consolidate.load_run(run, kind="dvae")


def test_a_given_checkpoint_that_is_incomplete_is_refused_with_what_it_lacks(stub_run):
    run, _ = stub_run
    folder = run / "checkpoints" / "step_00000001"
    (folder / "mp_rank_00_model_states.pt").unlink()
    with pytest.raises(CheckpointError, match=f"checkpoint={folder}: {folder / 'mp_rank_00_model_states.pt'} is "
                                              "missing$"):
        consolidate.checkpoint_dir(run, folder)


def test_a_runs_own_checkpoint_given_by_a_relative_path_is_taken(stub_run, monkeypatch):
    run, _ = stub_run
    monkeypatch.chdir(run / "checkpoints")
    assert consolidate.checkpoint_dir(run, "step_00000001") == Path("step_00000001")


def test_a_zero3_checkpoint_is_read_from_its_ranks_masters_under_the_plain_names(tmp_path):
    """Two ranks' ZeRO-3 shards of adam_net's model as DeepSpeed lays them out (each rank ceil(numel / 2) elements of
    every parameter in turn, the last rank's tail padded): the export gathers each parameter whole, named as the
    plain model names it."""
    net = model()
    groups = [["0.weight", "2.weight"], ["0.bias", "1.weight", "1.bias", "2.bias"]]
    weights = dict(net.named_parameters())
    flats = [[], []]
    for name in (name for group in groups for name in group):
        flat = weights[name].detach().reshape(-1)
        share = -(-flat.numel() // 2)
        padded = torch.cat([flat, torch.full((2 * share - flat.numel(),), float("nan"))])
        for rank in (0, 1):
            flats[rank].append(padded[rank * share:(rank + 1) * share])
    for rank in (0, 1):
        torch.save({"optimizer_state_dict": {"fp32_flat_groups": [torch.cat(flats[rank])]}},
                   tmp_path / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    torch.save({"module": None, "buffer_names": [],
                "param_shapes": [{f"model.{name}": weights[name].shape for name in group} for group in groups]},
               tmp_path / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    read = dict(checked(net, checkpoint_tensors(None, net, tmp_path, dtype=torch.float32), tmp_path))
    assert read.keys() == net.state_dict().keys()
    assert all(torch.equal(read[name], t) for name, t in net.state_dict().items())


def bf16_pipeline_with_masters(path, rename: dict[str, str] | None = None):
    """A one-rank bf16 pipeline checkpoint of adam_net's model at ZeRO stage 1: bf16 layer files, and the fp32 masters
    in one flat group with each parameter's fragment address (DeepSpeed's `param_slice_mappings`), named
    `<layer>.<key>` as a pipeline names them, some renamed by `rename`. Returns the task, the bf16 net, the masters."""
    from deepspeed.utils.tensor_fragment import fragment_address

    net = model()
    masters = {name: p.detach().clone() for name, p in net.named_parameters()}
    net = net.to(torch.bfloat16)
    task = pipeline(path, net)
    names = [(rename or {}).get(name, name) for name in masters]
    starts = [0]
    for master in masters.values():
        starts.append(starts[-1] + master.numel())
    torch.save({"optimizer_state_dict": {
        "single_partition_of_fp32_groups": [torch.cat([m.reshape(-1) for m in masters.values()])],
        "param_slice_mappings": [{name: fragment_address(m.numel(), start)
                                  for name, m, start in zip(names, masters.values(), starts)}]}},
        path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({"module": None, "buffer_names": [],
                "param_shapes": [{name: m.shape for name, m in zip(names, masters.values())}]},
               path / "mp_rank_00_model_states.pt")
    return task, net, masters


def test_an_fp32_export_of_a_bf16_pipeline_reads_each_layers_masters(tmp_path):
    task, net, masters = bf16_pipeline_with_masters(tmp_path)
    fp32 = dict(checkpoint_tensors(task, net, tmp_path, dtype=torch.float32))
    assert fp32.keys() == masters.keys()
    assert all(torch.equal(fp32[name], master) for name, master in masters.items())
    assert any(not torch.equal(master, master.to(torch.bfloat16).float()) for master in masters.values())


@pytest.mark.parametrize("name, refusal", [
    ("model.0.weight", "the optimizer holds model.0.weight, which is no pipeline layer's parameter"),
    ("3.weight", "layer 3 holds weight, which the model's layer 3 does not have")])
def test_pipeline_masters_of_no_layer_of_the_model_are_refused_by_name(name, refusal, tmp_path):
    task, net, _ = bf16_pipeline_with_masters(tmp_path, {"0.weight": name})
    with pytest.raises(CheckpointError, match=f"{tmp_path}: {refusal}"):
        list(checkpoint_tensors(task, net, tmp_path, dtype=torch.float32))


@pytest.fixture
def exporting(tmp_path):
    """(run dir, net, `trained`): a run whose step-1 checkpoint holds `net`, and its task (adam_net's model, exported
    as a dVAE is: a kind whose config JSON takes a plain dict here), for export's `trained=`."""
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    planted_run(tmp_path / "run", net)
    spec = SimpleNamespace(kind="dvae", config={"width": 16})
    task = SimpleNamespace(build_model=model, export_spec=lambda: spec)
    return tmp_path / "run", net, (task, {"trainer": {"ema": None}})


def test_export_writes_the_checkpoints_weights_in_shards_of_the_size_asked(exporting, tmp_path):
    from safetensors.torch import load_file

    run, net, trained = exporting
    out = consolidate.export(run, tmp_path / "out", dtype="fp32", max_shard_bytes=200, trained=trained)
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and all(shard.stat().st_size < 200 + 1024 for shard in shards)
    written = {name: t for shard in shards for name, t in load_file(shard).items()}
    assert written.keys() == net.state_dict().keys()
    assert all(torch.equal(written[name], t) for name, t in net.state_dict().items())


def test_export_of_ema_true_for_a_run_without_one_is_refused_before_anything_is_written(exporting, tmp_path):
    run, _, trained = exporting
    with pytest.raises(CheckpointError, match=f"ema=true: {run} trained without an EMA"):
        consolidate.export(run, tmp_path / "out.safetensors", ema=True, trained=trained)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("output", ["out", "out.safetensors"])
def test_an_export_that_fails_midway_leaves_no_temporary(exporting, output, tmp_path):
    """A checkpoint lacking a tensor is refused once the others are written: what was written goes."""
    run, net, trained = exporting
    folder = run / "checkpoints" / "step_00000001"
    states = torch.load(folder / "mp_rank_00_model_states.pt", weights_only=True)
    del states["module"]["model.2.bias"]
    torch.save(states, folder / "mp_rank_00_model_states.pt")
    size = (folder / "mp_rank_00_model_states.pt").stat().st_size
    (folder / MANIFEST).write_text(json.dumps({"files": {"mp_rank_00_model_states.pt": size}}))
    with pytest.raises(CheckpointError, match=r"lacks 1 of the model's tensors, e.g. \['2.bias'\]"):
        consolidate.export(run, tmp_path / output, dtype="fp32", trained=trained)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
