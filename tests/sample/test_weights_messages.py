"""How a shard that does not hold what its index says is named (megadalle/weights/load.py): the first tensor, and
how many more only when there are more: "(and 0 more)" after a single one reads as a count gone wrong."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from megadalle.weights import INDEX, ShardedWriter, export_layout, load_weights
from megadalle.weights.errors import WeightsDamaged


@pytest.fixture
def shards(tmp_path):
    """Two tensors in two shards of a folder, as export writes it."""
    state = {"a.weight": torch.zeros(64), "b.weight": torch.ones(64)}
    folder = tmp_path / "w"
    writer = ShardedWriter(folder, export_layout(state, torch.float32), "transformer", 256)
    for name, tensor in state.items():
        writer.add(name, tensor)
    writer.close({"n": 1})
    index = json.loads((folder / INDEX).read_text())
    assert len(set(index["weight_map"].values())) == 2
    return folder, index


def refusal(folder, index, edit):
    edit(index["weight_map"])
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(WeightsDamaged) as refused:
        load_weights(folder)
    return str(refused.value)


@pytest.mark.parametrize("names, more", [(["x.weight"], ""), (["x.weight", "y.weight"], " (and 1 more)")])
def test_tensors_a_shard_lacks_are_named_and_counted(shards, names, more):
    folder, index = shards
    shard = index["weight_map"]["a.weight"]
    message = refusal(folder, index, lambda weight_map: weight_map.update(dict.fromkeys(names, shard)))
    assert message == (f"{folder / shard}: lacks x.weight, which {INDEX} puts in it{more}; re-export the weights, or "
                       "copy this file again from where it came")


@pytest.mark.parametrize("names, more", [(["x.weight"], ""), (["x.weight", "y.weight"], " (and 1 more)")])
def test_tensors_a_shard_holds_unlisted_are_named_and_counted(shards, names, more):
    folder, index = shards
    shard = folder / index["weight_map"]["a.weight"]
    save_file({**load_file(str(shard)), **{name: torch.zeros(2) for name in names}}, str(shard),
              metadata={"format": "pt"})
    message = refusal(folder, index, lambda weight_map: None)
    assert message == (f"{shard}: holds x.weight, which {INDEX} does not list{more}; re-export the weights, or copy "
                       "this file again from where it came")
