"""CLIP's gather on several ranks leaves Python's warnings alone: a `catch_warnings()` around each all_gather reset the
once-per-location registry, so DeepSpeed's all_gather_into_tensor deprecation printed on every rank at every update."""
import subprocess
import sys

UPDATES = """
import warnings
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as nn_functional
from megadalle.models.clip import gather

def all_gather(x):
    nn_functional._deprecated("all_gather", "torch.distributed._functional_collectives.all_gather_single")
    return [x, x]

def zero_all_gather():
    warnings.warn("`torch.distributed.all_gather_into_tensor` is deprecated.", FutureWarning)

nn_functional.all_gather = all_gather
dist.is_available, dist.is_initialized = (lambda: True), (lambda: True)
dist.get_world_size, dist.get_rank = (lambda group=None: 2), (lambda group=None: 0)
for _ in range(3):
    assert gather(torch.ones(2, 4))[0].shape == (4, 4)
    zero_all_gather()
"""


def test_other_warnings_show_once_and_the_gathers_deprecation_never():
    """Python's own filters (no pytest capture), as a training rank runs: three updates, each a gather then a warning
    from elsewhere, as DeepSpeed's ZeRO all-gather raises it."""
    proc = subprocess.run([sys.executable, "-c", UPDATES], capture_output=True, text=True, check=True)
    assert proc.stderr.count("all_gather_into_tensor") == 1, proc.stderr
    assert "nn.functional.all_gather is deprecated" not in proc.stderr, proc.stderr
