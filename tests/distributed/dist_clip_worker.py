"""One rank that trains the tiny CLIP for one update on `dist_clip_pairs`' batches and records it.

`python dist_clip_worker.py '{"overrides": [...], "out": "<dir>"}'` builds the engine of the composed `train-clip`
config as the trainer does (engine.build after seeding), runs update 0 through StepRunner and writes
`<dir>/rank<N>.pt`: the update's metrics (global means) and the parameters after it (ZeRO-3's gathered whole).
With `"after_update": true` the task's after_update follows the update, as in the trainer, and the record holds the
logit scale's fp32 master too (`master_scale`: stage 0's whole master, or DeepSpeed's full view of it).
"""
import contextlib
import json
import sys
from pathlib import Path

import deepspeed
import torch

from dist_clip_pairs import micro_batches

from megadalle.config import build
from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed, engine, rng
from megadalle.train.clip import ClipTask
from megadalle.train.masters import whole_master
from megadalle.train.param_edit import ParamEditor
from megadalle.train.steps import StepRunner
from megadalle.train.task import DataPart


class PairsTask(ClipTask):
    def batches(self, start_step, part):
        return micro_batches(self.cfg, part)


def main(opts: dict) -> None:
    cfg = compose("train-clip", opts["overrides"])
    env = distributed.detect()
    distributed.init(env)
    rng.seed_all(int(cfg.seed))
    task = PairsTask(build(ClipConfig, cfg.clip, "clip"), None, None, int(cfg.seed))
    trainer, ds = build(TrainerConfig, cfg.trainer, "trainer"), build(DeepSpeedConfig, cfg.deepspeed, "deepspeed")
    built = engine.build(task, trainer, ds, env.world_size)
    part = DataPart(trainer.micro_batch, trainer.grad_accum, built.dp_rank, built.dp_world)
    metrics = StepRunner(task, built, part, 0).update(0)
    record = {}
    if opts.get("after_update"):
        task.after_update(built.model, ParamEditor(built.engine, ds.zero_stage), 0)
        scale = built.model.logit_scale
        whole = whole_master(scale, built.engine.optimizer)  # stage 0; ZeRO keeps fragments or partitions
        record["master_scale"] = deepspeed.utils.safe_get_full_fp32_param(scale) if whole is None else whole.detach()
    params = dict(built.model.named_parameters())
    partitioned = all(hasattr(p, "ds_tensor") for p in params.values())  # ZeRO-3: gathered to be read
    with deepspeed.zero.GatheredParameters(list(params.values())) if partitioned else contextlib.nullcontext():
        params = {name: p.detach().clone() for name, p in params.items()}
    torch.save({"metrics": metrics, "params": params, **record}, Path(opts["out"]) / f"rank{env.rank}.pt")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    distributed.exit_process(0)
