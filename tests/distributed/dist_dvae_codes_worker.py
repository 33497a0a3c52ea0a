"""One rank feeding the dVAE task codes no other rank uses: `python dist_dvae_codes_worker.py '{"out": "<dir>"}'`.

Rank r's cells choose only the codes r, r + W, r + 2W, ... (W ranks) in every update; the task's metrics after each
of 3 updates go to `<dir>/rank<r>.json`.
"""
import json
import sys
from pathlib import Path

import torch

from megadalle.config.dvae import DVAEConfig
from megadalle.train import distributed
from megadalle.train.dvae import DVAETask

VOCAB = 128


def main(opts: dict) -> None:
    env = distributed.detect()
    distributed.init(env)
    cfg = DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=VOCAB, n_init=8)
    task = DVAETask(cfg, data=None, usage_window=1)
    model = task.build_model()
    own = torch.arange(env.rank, VOCAB, env.world_size)
    records = []
    for step in range(3):
        for _ in range(2):  # two micro-batches, each all of this rank's codes twice
            task.codes.observe(own.repeat(2).view(2, -1))
        records.append(task.after_update(model, editor=None, step=step))
    (Path(opts["out"]) / f"rank{env.rank}.json").write_text(json.dumps(records))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    distributed.exit_process(0)
