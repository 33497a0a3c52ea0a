"""One rank of the full-disk-at-wandb-start check: `python dist_wandb_disk_worker.py '<json options>'`.

Rank 0's disk refuses wandb_id.json (ENOSPC); every rank starts the wandb callback as the loop does (`disk_full.attempt`
then `stop_every_rank`) and prints one JSON line: what the start said and what stopped it."""
import errno
import json
import sys
from functools import partial
from pathlib import Path

from megadalle.config.train import LoggerConfig
from megadalle.train import disk_full, distributed, wandb_log
from megadalle.train.callbacks import RunInfo


def refuse(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def main(opts: dict) -> None:
    env = distributed.detect()
    distributed.init(env, opts["timeout_s"] / 60)
    if env.rank == 0:
        wandb_log.atomic.write_json = refuse
    run_dir = Path(opts["run_dir"])
    callback = wandb_log.Wandb(LoggerConfig(mode=opts["mode"]))
    failure = disk_full.attempt(partial(callback.start, RunInfo(run_dir, env.rank, env.world_size, 0, 10)))
    try:
        disk_full.stop_every_rank(failure)
        stopped = None
    except disk_full.RunFileError as err:
        stopped = str(err)
    print(json.dumps({"failure": failure, "stopped": stopped}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
