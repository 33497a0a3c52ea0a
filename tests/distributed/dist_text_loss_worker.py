"""One rank that trains the tiny Transformer for 2 updates on `dist_captions`' batches and records them.

`python dist_text_loss_worker.py '{"overrides": [...], "out": "<dir>"}'` builds the engine of the composed `train`
config as the trainer does (engine.build after seeding), runs updates 0 and 1 through StepRunner, validates on
update 0's global batch in between (the trainer's Validator), and writes `<dir>/rank<N>.pt`: the metrics of both
updates (global means), the validation metrics, and the parameters this rank trains after update 0, under their
plain-model names (a pipeline stage's own only; ZeRO-3's gathered whole).
"""
import contextlib
import json
import sys
from pathlib import Path

import deepspeed
import torch

from dist_captions import micro_batches

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.train import distributed, engine, rng
from megadalle.train.steps import StepRunner
from megadalle.train.task import DataPart
from megadalle.train.transformer import TransformerTask, task_from_config
from megadalle.train.validate import Validator


class CaptionsTask(TransformerTask):
    def batches(self, start_step, part):
        return micro_batches(self.cfg, part, start_step)

    def validation_batches(self, part):
        return micro_batches(self.cfg, part, 0)


def main(opts: dict) -> None:
    cfg = compose("train", opts["overrides"])
    env = distributed.detect()
    distributed.init(env)
    rng.seed_all(int(cfg.seed))
    plain = task_from_config(cfg)
    task = CaptionsTask(plain.cfg, plain.data, plain.seed)
    trainer = build(TrainerConfig, cfg.trainer, "trainer")
    built = engine.build(task, trainer, build(DeepSpeedConfig, cfg.deepspeed, "deepspeed"), env.world_size)
    part = DataPart(trainer.micro_batch, trainer.grad_accum, built.dp_rank, built.dp_world)
    runner = StepRunner(task, built, part, 0)
    first = runner.update(0)
    params = dict(built.model.named_parameters())
    partitioned = all(hasattr(p, "ds_tensor") for p in params.values())  # ZeRO-3: gathered to be read
    with deepspeed.zero.GatheredParameters(list(params.values())) if partitioned else contextlib.nullcontext():
        params = {name: p.detach().clone() for name, p in params.items()}
    validated = Validator(task, built, part, every=1, batches=1, seed=int(cfg.seed)).run(0)
    second = runner.update(1)
    torch.save({"metrics": [first, second], "validated": validated, "params": params},
               Path(opts["out"]) / f"rank{env.rank}.pt")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    distributed.exit_process(0)
