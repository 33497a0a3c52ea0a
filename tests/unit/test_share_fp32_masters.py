"""engine.share_fp32_masters: one fp32 copy of a rank's weights where DeepSpeed keeps two (ZeRO-1, 2 and 3)."""
import io
from types import SimpleNamespace

import deepspeed.comm
import torch
from deepspeed.checkpoint.constants import SINGLE_PARTITION_OF_FP32_GROUPS

from megadalle.train.engine import share_fp32_masters


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
    assert share_fp32_masters(opt) == 2
    assert [m.data_ptr() for m in masters] == [p.data_ptr() for p in opt.fp16_partitioned_groups_flat]
    assert adam.param_groups[0]["params"][0] is masters[0]
    for m in masters:
        m.grad = torch.ones_like(m)
    before = flat.clone()
    adam.step()  # the optimizer's step lands in the weights themselves
    torch.testing.assert_close(flat, before - 0.1)
    assert share_fp32_masters(opt) == 0, "a second call finds nothing left to share"


def test_bf16_partitions_offloaded_optimizers_and_other_stages_keep_their_masters():
    bf16 = optimizer([torch.randn(4, dtype=torch.bfloat16)])
    offloaded = optimizer([torch.randn(4)], offload=True)
    for opt in (bf16, offloaded):
        assert share_fp32_masters(opt) == 0
        assert opt.fp32_partitioned_groups_flat[0].data_ptr() != opt.fp16_partitioned_groups_flat[0].data_ptr()
    assert share_fp32_masters(SimpleNamespace()) == 0  # ZeRO-0 and bf16's optimizers have no such groups


class Zero12(SimpleNamespace):
    """stage_1_and_2.py's layout: each group's flat weights cut into one partition per data-parallel rank,
    the master a float32 clone of this rank's; `_link_all_hp_params` remakes each parameter's fp32 view;
    `state_dict` saves the masters without their padding (slices of them)."""

    def _link_all_hp_params(self):
        self.links += 1

    def state_dict(self):
        return {SINGLE_PARTITION_OF_FP32_GROUPS: [m[:-1] for m in self.single_partition_of_fp32_groups]}


def test_zero12_masters_become_the_ranks_own_partitions_and_are_linked_again(monkeypatch):
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda group=None: {"dp0": 1, "dp1": 0}[group])
    flats = [torch.randn(800), torch.randn(600)]  # large enough that a saved view shows in the bytes
    partitions = [list(flats[0].chunk(2)), list(flats[1].chunk(2))]
    own = [partitions[0][1], partitions[1][0]]  # rank 1 of group 0, rank 0 of group 1
    masters = [torch.nn.Parameter(p.detach().clone()) for p in own]
    opt = Zero12(parallel_partitioned_bit16_groups=partitions, real_dp_process_group=["dp0", "dp1"],
                 single_partition_of_fp32_groups=masters, cpu_offload=False, links=0)
    adam = torch.optim.Adam(masters, lr=0.1)
    assert share_fp32_masters(opt) == 2 and opt.links == 1
    assert [m.data_ptr() for m in masters] == [p.data_ptr() for p in own]
    for m in masters:
        m.grad = torch.ones_like(m)
    before = [f.clone() for f in flats]
    adam.step()  # lands in this rank's partition of the flat weights, and nowhere else
    torch.testing.assert_close(flats[0], torch.cat([before[0][:400], before[0][400:] - 0.1]))
    torch.testing.assert_close(flats[1], torch.cat([before[1][:300] - 0.1, before[1][300:]]))
    assert share_fp32_masters(opt) == 0 and opt.links == 1, "nothing left to share, nothing to link again"
    saved = opt.state_dict()[SINGLE_PARTITION_OF_FP32_GROUPS]  # what a checkpoint writes: each rank's own rows
    assert [t.tolist() for t in saved] == [p[:-1].tolist() for p in own]
    assert all(t.untyped_storage().nbytes() == 4 * t.numel() for t in saved)
    assert _saved_bytes(saved) == _saved_bytes([t.detach().clone() for t in saved]), "more than the rows was saved"
    assert _saved_bytes([flats[0][4:7]]) > _saved_bytes([flats[0][4:7].clone()])  # what a view would have cost
    offloaded = Zero12(parallel_partitioned_bit16_groups=partitions, real_dp_process_group=["dp0", "dp1"],
                       single_partition_of_fp32_groups=[p.detach().clone() for p in own], cpu_offload=True, links=0)
    assert share_fp32_masters(offloaded) == 0 and offloaded.links == 0


def _saved_bytes(tensors) -> int:
    written = io.BytesIO()
    torch.save(tensors, written)
    return len(written.getvalue())
