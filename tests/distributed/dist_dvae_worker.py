"""One rank of `megadalle train-dvae`: `python dist_dvae_worker.py '{"overrides": [...]}'`."""
import json
import sys

from megadalle.config.compose import compose
from megadalle.train.distributed import exit_process
from megadalle.train.dvae import train_dvae

if __name__ == "__main__":
    train_dvae(compose("train-dvae", json.loads(sys.argv[1])["overrides"]))
    exit_process(0)
