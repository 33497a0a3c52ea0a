"""One rank of a toy training run: `python dist_worker.py '<json options>'` (ranks come from the env).

Used by the distributed tests to train the toy task under any layout; the losses land in
`<run_dir>/metrics.jsonl` (rank 0).
"""
import errno
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

from dist_toy import ToyTask  # noqa: E402

from megadalle.config.train import DeepSpeedConfig, LoggerConfig, TrainerConfig  # noqa: E402
from megadalle.train.callbacks import Callback  # noqa: E402
from megadalle.train.distributed import exit_process  # noqa: E402
from megadalle.train.loop import RunOptions, train  # noqa: E402


def main(opts: dict) -> None:
    if opts.get("disk_full_rank") == int(os.environ["RANK"]):
        fill_disk_for_optimizer_files()
    held = torch.ones(opts["hold_mib"] * 2**18) if opts.get("hold_rank") == int(os.environ["RANK"]) else None
    trainer = TrainerConfig(steps=opts.get("steps", 6), micro_batch=opts.get("micro_batch", 2),
                            grad_accum=opts.get("grad_accum", 1), lr=1e-2, warmup_steps=2, weight_decay=0.01,
                            checkpoint_every=opts.get("checkpoint_every", 0), log_every=100, ema=opts.get("ema"),
                            grad_clip=opts.get("grad_clip", 1.0), precision=opts.get("precision", "auto"),
                            keep_checkpoints=opts.get("keep_checkpoints", 3))
    ds = DeepSpeedConfig(zero_stage=opts.get("zero_stage", 1), pipeline_stages=opts.get("pipeline_stages", 1),
                         grad_accum_dtype=opts.get("grad_accum_dtype", "fp32"), extra=opts.get("ds_extra", {}))
    run = RunOptions(run_dir=opts["run_dir"], resume=opts.get("resume", "auto"), seed=0,
                     config={"data_seed": 0, "dropout": opts.get("dropout", True)},
                     task_factory="dist_toy:build_toy_task")
    task = ToyTask(dropout=opts.get("dropout", True), nan_step=opts.get("nan_step"), record=opts.get("record"))
    result = train(task, trainer, ds, LoggerConfig(mode=opts.get("wandb", "disabled")), run,
                   extra_callbacks=[Sleep(opts.get("step_sleep", 0.0))])
    del held  # `hold_rank` held `hold_mib` MiB (resident: written) through the run, its peak above the others'
    if opts.get("record_optimizer"):
        with open(os.path.join(opts["run_dir"], f"optimizer_rank{result.engine.global_rank}.txt"), "w") as f:
            f.write(type(result.engine.optimizer).__name__)
        inner = getattr(result.engine.optimizer, "optimizer", result.engine.optimizer)  # the torch AdamW
        steps = sorted({int(state["step"]) for state in inner.state.values() if "step" in state})
        with open(os.path.join(opts["run_dir"], f"adam_steps_rank{result.engine.global_rank}.json"), "w") as f:
            json.dump(steps, f)


def fill_disk_for_optimizer_files() -> None:
    """This rank's DeepSpeed optimizer file meets a full disk (a node-local disk can fill on one rank only)."""
    save = torch.save

    def full(obj, f, *args, **kwargs):
        if "optim_states" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    torch.save = full


class Sleep(Callback):
    """Slows every update down so a test can kill the run at a chosen point."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def step(self, step, metrics):
        time.sleep(self.seconds)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    exit_process(0)
