"""One rank of the failed-rank checks: `python dist_rank_failure_worker.py '<json options>'` (ranks from the env).

Runs `megadalle.cli.entry`, the `megadalle` command's own exit path, over a stand-in for a training verb: both ranks
start the process group with a 5-minute timeout, then
- `{"fails": "crash"}`: rank 1 raises an error no verb reports (a killed loader worker's) while rank 0 waits in an
  all-reduce that rank 1 will never join, as a healthy rank waits in the update's reduction;
- `{"fails": "together", "rank0_s": S}`: both ranks report one failure (status 2), as `first_error` hands a
  checkpoint that cannot be saved to every rank, rank 0 after S seconds of its own end work, which it ends by
  writing the file `opts["done"]`."""
import json
import sys
import time
from pathlib import Path

import torch

from megadalle import cli
from megadalle.train import distributed


def stand_in(opts: dict):
    def main(argv=None, to_exit=False) -> int:
        env = distributed.detect()
        distributed.init(env, 5)
        if opts["fails"] == "together":
            if env.rank == 0:
                time.sleep(opts["rank0_s"])
                Path(opts["done"]).write_text("rank 0 finished its end work")
            return cli.fail("train", "a failure every rank learned together")
        if env.rank == 1:
            print("failing now", flush=True)
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed.")
        torch.distributed.all_reduce(torch.ones(1))
        return 0

    return main


if __name__ == "__main__":
    cli.main = stand_in(json.loads(sys.argv[1]))
    cli.entry()
