"""`megadalle export` of ZeRO-1, ZeRO-3 and 2-stage pipeline runs gives the trained model, in every form
(and vocabulary tables trained in pieces, model.vocab_chunk, whole).

The training ranks record the logits of a probe batch from the model still inside DeepSpeed
(dist_train_worker.py). The fp32 export, read back by `load_model` (what `generate` uses) from the
folder, from its index JSON and as a single .safetensors file, must give those logits; the default
bf16 export must be the fp32 weights rounded to bf16, tensor for tensor.
"""
import json

import pytest
import torch
from safetensors import safe_open

from megadalle.cli import main as cli
from megadalle.config.compose import compose
from megadalle.models.transformer import Transformer
from megadalle.sampling.load import load_model
from megadalle.train.consolidate import export, pipeline_names
from megadalle.weights import INDEX, load_weights

import dist_launch as launch
from dist_toy import ToyTask
from dist_train_worker import probe_batch


def logits(model: Transformer, overrides):
    text, image = probe_batch(compose("train", overrides))
    with torch.no_grad():
        return model.eval()(text, image)


@pytest.mark.distributed
@pytest.mark.parametrize("layout, extra", [("zero1", []), ("zero3", []), ("pipe", []),
                                           ("zero3", ["model.vocab_chunk=100"])],
                         ids=["zero1", "zero3", "pipe", "zero3-pieces"])
def test_export_matches_trained_logits(layout, extra, train_overrides, tmp_path):
    run = tmp_path / "run"
    overrides = [*train_overrides, f"deepspeed={layout}", f"run_dir={run}", *extra]
    launch.run(2, {"overrides": overrides, "probe": str(tmp_path / "probe.pt")}, tmp_path / "logs",
               script="dist_train_worker.py", timeout=600)
    trained = torch.load(tmp_path / "probe.pt", weights_only=True)
    assert cli(["export", f"run={run}", f"output={tmp_path / 'fp32'}", "dtype=fp32", "weights_only=true"]) == 0
    assert cli(["export", f"run={run}", f"output={tmp_path / 'bf16'}", "weights_only=true"]) == 0
    export(run, tmp_path / "one.safetensors", dtype="fp32")

    for source in (tmp_path / "fp32", tmp_path / "fp32" / INDEX, tmp_path / "one.safetensors", run):
        text_logits, image_logits = logits(load_model(source, "transformer"), overrides)
        torch.testing.assert_close(text_logits, trained["text"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(image_logits, trained["image"], rtol=1e-5, atol=1e-5)
    fp32, config = load_weights(tmp_path / "fp32", kind="transformer")
    bf16, _ = load_weights(tmp_path / "bf16", kind="transformer")
    # tables trained in pieces are exported whole, under the whole-table names
    assert config["vocab_chunk"] == 0 and not [name for name in fp32 if ".pieces." in name]
    untrained = Transformer(load_model(tmp_path / "fp32", "transformer").cfg)
    assert fp32.keys() == untrained.state_dict().keys()
    assert fp32.keys() == bf16.keys()
    for name, value in fp32.items():
        assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], value.to(torch.bfloat16)), name
    assert not torch.allclose(logits(untrained, overrides)[1], trained["image"], atol=1e-3), "training changed nothing"


@pytest.mark.distributed
def test_shards_split_at_the_size_limit(tmp_path):
    run = tmp_path / "run"
    launch.run(1, {"run_dir": str(run), "steps": 1, "zero_stage": 1}, tmp_path / "logs")
    limit = 20_000
    folder = export(run, tmp_path / "out", dtype="fp32", max_shard_bytes=limit)
    index = json.loads((folder / INDEX).read_text())
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    count = len(shards)
    assert count > 1 and shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert sorted(set(index["weight_map"].values())) == shards
    total = 0
    for shard in shards:
        with safe_open(str(folder / shard), "pt") as f:
            names = list(f.keys())
            sizes = [f.get_tensor(n).numel() * 4 for n in names]
        assert sorted(n for n, s in index["weight_map"].items() if s == shard) == sorted(names)
        assert sum(sizes) <= limit or len(names) == 1, (shard, sizes)
        total += sum(sizes)
    assert index["metadata"]["total_size"] == total
    state, _ = load_weights(folder, kind="toy")
    saved = torch.load(run / "checkpoints" / "step_00000001" / "mp_rank_00_model_states.pt", weights_only=True)
    assert state.keys() == set(ToyTask().build_model().state_dict())
    assert all(torch.equal(state[name.removeprefix("model.")], t) for name, t in saved["module"].items())


def test_pipeline_layer_files_map_to_plain_names():
    """Layer i's checkpoint keys, prefixed with `PipelineSpec.layer_names[i]`, are the plain model's names."""
    task = ToyTask()
    model = task.build_model()
    names = pipeline_names(task, model)
    assert names[1]["fc1.weight"] == "blocks.0.fc1.weight" and names[0]["tok.weight"] == "embed.tok.weight"
    assert sorted(n for layer in names for n in layer.values()) == sorted(model.state_dict())
