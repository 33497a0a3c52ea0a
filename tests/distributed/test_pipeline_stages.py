"""A 2-stage pipeline builds each stage from LayerSpecs: a rank holds its layers only, at the plain init."""
import json

import pytest
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.train.transformer import task_from_config

import dist_launch as launch

OVERRIDES = ["model=tiny", "data=synthetic", "trainer=tiny", "trainer.micro_batch=2", "trainer.grad_accum=2",
             "logger=none", "deepspeed=pipe", "seed=7"]


@pytest.mark.distributed
@pytest.mark.parametrize("partition", ["type:Block", "parameters"])
def test_each_stage_builds_and_holds_only_its_layers_at_the_plain_init(tmp_path, partition):
    """`parameters` makes DeepSpeed build every layer to count it: on the meta device, so still nothing real."""
    overrides = [*OVERRIDES, f"deepspeed.partition_method={partition}"]
    launch.run(2, {"overrides": overrides, "out": str(tmp_path)}, tmp_path / "logs", script="dist_build_worker.py")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    cfg = compose("train", overrides)
    torch.manual_seed(7)  # what the trainer's rng.seed_all(seed) does to torch before building
    plain = dict(Transformer(build(TransformerConfig, cfg.model, "model")).named_parameters())

    names = [set(rank["stats"]) for rank in ranks]
    assert not names[0] & names[1] and names[0] | names[1] == set(plain), "the stages split the model"
    assert any(n.startswith("embed.") for n in names[0]) and any(n.startswith("head.") for n in names[1])
    for rank, held in zip(ranks, names):
        share = sum(plain[n].numel() for n in held)
        assert rank["engine_params"] == share < sum(p.numel() for p in plain.values())
        counted = sum(p.numel() for p in plain.values()) if partition == "parameters" else 0
        assert rank["registered"] == {"cpu": share, **({"meta": counted} if counted else {})}
        for name in held:
            mean, std, numel = rank["stats"][name]
            assert numel == plain[name].numel()
            assert mean == pytest.approx(plain[name].mean().item(), abs=1e-7), name
            assert std == pytest.approx(plain[name].std().item(), rel=1e-6), name


def test_layer_names_map_pipeline_layers_to_the_plain_model():
    """Layer i's state_dict keys, prefixed with layer_names[i], are the plain model's parameter names."""
    task = task_from_config(compose("train", OVERRIDES))
    spec = task.pipeline()
    model = Transformer(task.cfg)
    keys = []
    for layer, name in zip(spec.layers, spec.layer_names):
        built = layer.build()
        assert set(built.state_dict()) == set(model.get_submodule(name).state_dict()), name
        keys += [f"{name}.{key}" for key in built.state_dict()]
    assert sorted(keys) == sorted(model.state_dict())
