"""One rank of the toy training run (dist_worker.py) that saves the dropout mask of its first training forward.

`python dist_rank_seeds_worker.py '<json options>'`: the options of dist_worker.py; the mask (True = dropped)
lands in `<run_dir>/dropout_rank<RANK>.pt`. Dropout draws from the CPU generator the trainer seeds per rank.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))

import dist_worker  # noqa: E402

from megadalle.train.distributed import exit_process  # noqa: E402


def record_first_mask(path: str) -> None:
    dropout = F.dropout

    def recording(input, p=0.5, training=True, inplace=False):
        out = dropout(input, p, training, inplace)
        if training and p > 0 and not os.path.exists(path):
            torch.save((out == 0) & (input != 0), path)
        return out

    F.dropout = recording


if __name__ == "__main__":
    opts = json.loads(sys.argv[1])
    record_first_mask(os.path.join(opts["run_dir"], f"dropout_rank{os.environ['RANK']}.pt"))
    dist_worker.main(opts)
    exit_process(0)
