"""A small net and the AdamW settings the tests of apex's FusedAdam states train it with.

A helper, not a test module: the Adam state's tests (tests/unit/test_apex_adam.py) and the fp32 export of a
FusedAdam run (test_export_flat_masters.py) build the same net, and neither should be the other's library.
"""
import torch
from torch import nn

from megadalle.config.train import TrainerConfig

CONFIG = TrainerConfig(lr=1e-2, weight_decay=0.1, betas=[0.9, 0.96], eps=1e-8)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
