"""One rank of the failed-rank check: `python dist_rank_failure_worker.py '<json options>'` (ranks from the env).

Runs `megadalle.cli.entry`, the `megadalle` command's own exit path, over a stand-in for a training verb: both ranks
start the process group with a 5-minute timeout, then rank 1 fails alone (`opts["fails"]`: "error", one no verb
reports, as a killed loader worker's; "user", one reported in a line, status 2) while rank 0 waits in an
all-reduce that rank 1 will never join, as a healthy rank waits in the update's reduction."""
import json
import sys

import torch

from megadalle import cli
from megadalle.train import distributed


def stand_in(fails: str):
    def main(argv=None) -> int:
        env = distributed.detect()
        distributed.init(env, 5)
        if env.rank == 1:
            if fails == "error":
                raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed.")
            return cli.fail("train", "a setting this rank alone refuses")
        torch.distributed.all_reduce(torch.ones(1))
        return 0

    return main


if __name__ == "__main__":
    cli.main = stand_in(json.loads(sys.argv[1])["fails"])
    cli.entry()
