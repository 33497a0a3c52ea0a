"""One rank of a toy run that validates: `python dist_val_worker.py '<json options>'` (ranks from the env).

The toy task of tests/distributed with a fixed held-out stream (another data seed); the losses and
val/... metrics land in `<run_dir>/metrics.jsonl` (rank 0). The run's model is rebuilt by `load_run` through
`dist_toy:build_toy_task` (run.json), the held-out stream by `ValidatedToy`.
"""
import json
import sys

from dist_toy import ToyTask

from megadalle.config.train import DeepSpeedConfig, LoggerConfig, TrainerConfig
from megadalle.train.distributed import exit_process
from megadalle.train.loop import RunOptions, train


class ValidatedToy(ToyTask):
    def validation_batches(self, part):
        return ToyTask(data_seed=1000).batches(0, part)


def main(opts: dict) -> None:
    trainer = TrainerConfig(steps=4, micro_batch=2, grad_accum=opts["grad_accum"], lr=1e-2, warmup_steps=2,
                            weight_decay=0.01, checkpoint_every=0, log_every=100, eval_every=opts.get("eval_every", 2),
                            eval_batches=2, ema=opts.get("ema"), precision=opts.get("precision", "auto"))
    ds = DeepSpeedConfig(zero_stage=opts["zero_stage"], pipeline_stages=opts.get("pipeline_stages", 1),
                         extra=opts.get("ds_extra", {}))
    train(ValidatedToy(dropout=False), trainer, ds, LoggerConfig(mode="disabled"),
          RunOptions(run_dir=opts["run_dir"], seed=0, config={"data_seed": 0, "dropout": False},
                     task_factory="dist_toy:build_toy_task"))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    exit_process(0)
