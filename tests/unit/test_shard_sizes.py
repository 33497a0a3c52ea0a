"""A sharded export cuts its shards at `max_shard_bytes`: no shard's tensors exceed it, except a tensor larger
than the limit alone in its own shard.

The limit is what a reader or an upload must be able to take in one file (Hugging Face's 5 GB); a shard let past
it by the tensor that crossed the line can be one tensor (a 12B model's token table) too large. The grouping below
is worked out by hand from the tensors' sizes, in the layout's order.
"""
from __future__ import annotations

import json

import torch
from safetensors import safe_open

from megadalle.weights import INDEX, ShardedWriter, export_layout

MAX = 1000
STATE = {  # float32: 4 bytes an element
    "a": torch.ones(100),  # 400
    "b": torch.ones(100),  # 400: a + b = 800
    "c": torch.ones(75),  # 300: 1100 with a + b, so a shard of its own begins
    "d": torch.ones(300),  # 1200: larger than the limit, alone
    "e": torch.ones(50),  # 200
    "f": torch.ones(200),  # 800: e + f = 1000, exactly the limit, fits
    "g": torch.ones(1),  # 4: 4 bytes over the limit with e + f
}
EXPECTED = [["a", "b"], ["c"], ["d"], ["e", "f"], ["g"]]


def test_no_shard_exceeds_the_limit_but_for_a_tensor_larger_than_it(tmp_path):
    writer = ShardedWriter(tmp_path / "out", export_layout(STATE, torch.float32), "toy", max_shard_bytes=MAX)
    for name, tensor in STATE.items():
        writer.add(name, tensor)
    folder = writer.close({"width": 1})
    weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
    files = sorted(set(weight_map.values()))
    assert files == [f"model-{i:05d}-of-00005.safetensors" for i in range(1, 6)]
    shards = []
    for file in files:
        with safe_open(str(folder / file), "pt") as f:
            names = sorted(f.keys())
            size = sum(f.get_tensor(name).nbytes for name in names)
        assert size <= MAX or len(names) == 1, (file, names, size)
        shards.append(names)
    assert shards == EXPECTED
