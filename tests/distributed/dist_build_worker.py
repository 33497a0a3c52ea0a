"""One rank that builds the tiny Transformer through engine.build under a layout and records it.

`python dist_build_worker.py '{"overrides": [...], "out": "<dir>"}'` (with `"verb": "train-clip"`: CLIP, built
and recorded but not trained) writes `<dir>/rank<N>.json`:
each parameter's partition (ZeRO-3: the elements this rank's `ds_tensor` holds, of how many, and
what the parameter itself holds outside a forward), the elements a freshly constructed model
(engine.build_model, before deepspeed.initialize) holds on this rank, the elements of the parameters engine.build
creates by device type, per-tensor statistics of the whole (gathered)
model, the losses of updates 0 and 1 (the global means, the same on every rank: update 1 follows the first
optimizer step) and, under ZeRO-3, the optimizer's sub-groups and the elements still gathered whole after each
forward of updates 0 and 1 (what DeepSpeed keeps from the forward to the backward).
"""
import collections
import contextlib
import json
import sys
from pathlib import Path

import deepspeed
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed, engine, rng
from megadalle.train.clip import task_from_config as clip_task_from_config
from megadalle.train.steps import StepRunner
from megadalle.train.task import DataPart
from megadalle.train.transformer import task_from_config


def main(opts: dict) -> None:
    verb = opts.get("verb", "train")  # or train-clip: built and recorded, not trained (it would need shards)
    cfg = compose(verb, opts["overrides"])
    env = distributed.detect()
    distributed.init(env)
    rng.seed_all(int(cfg.seed))
    task = task_from_config(cfg) if verb == "train" else clip_task_from_config(cfg)
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    ds = build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    config = engine.ds_config(trainer, ds, env.world_size, engine.training_dtype(trainer.precision))
    constructed = None
    if ds.pipeline_stages == 1:
        constructed = sum(p.numel() for p in engine.build_model(task, ds, config).parameters())
        rng.seed_all(int(cfg.seed))
    registered = collections.Counter()  # elements of the parameters engine.build creates, by device type

    def count(module, name, param):
        registered[param.device.type] += param.numel()

    hook = torch.nn.modules.module.register_module_parameter_registration_hook(count)
    built = engine.build(task, trainer, ds, env.world_size)
    hook.remove()
    params = dict(built.model.named_parameters())
    partitioned = all(hasattr(p, "ds_tensor") for p in params.values())
    shares = {name: [p.ds_tensor.numel(), p.ds_numel, p.numel()] for name, p in params.items()} if partitioned else {}
    gather = deepspeed.zero.GatheredParameters(list(params.values())) if partitioned else contextlib.nullcontext()
    with gather, torch.no_grad():
        stats = {name: [p.float().mean().item(), p.float().std().item(), p.numel()] for name, p in params.items()}
    gathered, losses = [], []
    if verb == "train":
        if partitioned:
            def count_gathered(*_):
                gathered.append(sum(p.numel() for p in params.values() if p.ds_status.name != "NOT_AVAILABLE"))
            built.engine.module.register_forward_hook(count_gathered)  # after DeepSpeed's own release hook
        part = DataPart(trainer.micro_batch, trainer.grad_accum, built.dp_rank, built.dp_world)
        runner = StepRunner(task, built, part, 0)
        losses = [runner.update(step)["loss"] for step in (0, 1)]
    optimizer = built.engine.optimizer
    sub_groups = len(optimizer.fp32_partitioned_groups_flat) if partitioned else None
    shared = [master.data_ptr() == weights.data_ptr() for weights, master in engine.master_pairs(optimizer)]
    record = {"shares": shares, "stats": stats, "losses": losses, "constructed": constructed, "gathered": gathered,
              "sub_groups": sub_groups, "masters_shared": shared,
              "registered": registered,
              "engine_params": sum(p.numel() for p in built.engine.module.parameters())}
    (Path(opts["out"]) / f"rank{env.rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    distributed.exit_process(0)
