"""The autotuners never time a variant that spills registers at sm_90 (head_dim 128 at 4 warps)."""
import pytest
import triton

from megadalle.kernels import backward, forward
from megadalle.kernels.tiles import spill_free

GPU_CONFIGS = [triton.Config({"STAGES": s}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3, 4)]
"""What tiles.tuning_configs() gives off the interpreter (under it, a single config)."""


def _shapes(configs):
    return [(c.num_warps, c.num_stages) for c in configs]


@pytest.mark.parametrize("kernel, dropped_stages", [(forward._fwd_kernel, ()), (backward._dkdv_kernel, ()),
                                                    (backward._dq_kernel, (3,))])
def test_each_kernel_keeps_only_8_warps_at_head_dim_128(kernel, dropped_stages):
    prune = kernel.early_config_prune
    assert _shapes(prune(GPU_CONFIGS, {}, HEAD_DIM=64)) == _shapes(GPU_CONFIGS)
    kept = _shapes(prune(GPU_CONFIGS, {}, HEAD_DIM=128))
    assert kept == [(8, s) for s in (2, 3, 4) if s not in dropped_stages]


def test_a_lone_config_is_kept_whatever_the_head_size():
    lone = [triton.Config({"STAGES": 1}, num_warps=4, num_stages=1)]  # the interpreter's
    assert spill_free((3,))(lone, {}, HEAD_DIM=128) == lone
