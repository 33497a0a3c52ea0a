"""engine.share_zero3_masters: one fp32 copy of a ZeRO-3 rank's weights where DeepSpeed keeps two."""
from types import SimpleNamespace

import torch

from megadalle.train.engine import share_zero3_masters


def optimizer(partitions: list[torch.Tensor], offload: bool = False) -> SimpleNamespace:
    """DeepSpeed's layout: sub-group partitions cut from one flat buffer, each master a float32 clone."""
    masters = [torch.nn.Parameter(p.detach().float().clone()) for p in partitions]
    return SimpleNamespace(fp16_partitioned_groups_flat=partitions, fp32_partitioned_groups_flat=masters,
                           offload_optimizer=offload)


def test_fp32_partitions_become_the_masters_and_the_masters_stay_the_same_objects():
    flat = torch.randn(10)
    opt = optimizer([flat.narrow(0, 0, 6), flat.narrow(0, 6, 4)])
    masters = list(opt.fp32_partitioned_groups_flat)
    adam = torch.optim.Adam(masters, lr=0.1)
    assert share_zero3_masters(opt) == 2
    assert [m.data_ptr() for m in masters] == [p.data_ptr() for p in opt.fp16_partitioned_groups_flat]
    assert adam.param_groups[0]["params"][0] is masters[0]
    for m in masters:
        m.grad = torch.ones_like(m)
    before = flat.clone()
    adam.step()  # the optimizer's step lands in the weights themselves
    torch.testing.assert_close(flat, before - 0.1)
    assert share_zero3_masters(opt) == 0, "a second call finds nothing left to share"


def test_bf16_partitions_offloaded_optimizers_and_other_stages_keep_their_masters():
    bf16 = optimizer([torch.randn(4, dtype=torch.bfloat16)])
    offloaded = optimizer([torch.randn(4)], offload=True)
    for opt in (bf16, offloaded):
        assert share_zero3_masters(opt) == 0
        assert opt.fp32_partitioned_groups_flat[0].data_ptr() != opt.fp16_partitioned_groups_flat[0].data_ptr()
    assert share_zero3_masters(SimpleNamespace(single_partition_of_fp32_groups=[])) == 0  # ZeRO-1/2
