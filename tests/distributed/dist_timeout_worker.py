"""One rank of the group-timeout check: `python dist_timeout_worker.py '<json options>'` (ranks from the env).

Starts the ranks as a run does (distributed.init with `timeout_s`), makes ZeRO's data-parallel group as DeepSpeed
does (without a timeout), then rank 1 stops answering for `sleep_s` while rank 0 all-reduces over that group and
prints how long it waited and what ended the wait."""
import json
import os
import sys
import time

import torch

from megadalle.train import distributed


def main(opts: dict) -> None:
    env = distributed.detect()
    distributed.init(env, opts["timeout_s"] / 60)
    from deepspeed.utils import groups

    group = groups._clone_world_group()
    if env.rank == 1:
        time.sleep(opts["sleep_s"])
        os._exit(0)
    began = time.monotonic()
    try:
        torch.distributed.all_reduce(torch.ones(1), group=group)
        ended = "no error"
    except Exception as err:  # what torch raises differs between backends and versions
        ended = type(err).__name__
    print(json.dumps({"waited_s": time.monotonic() - began, "ended": ended}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
