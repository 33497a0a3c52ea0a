"""An fp32 export of a run trained with apex's FusedAdam at ZeRO stage 0 in bf16 reads its fp32 masters: DeepSpeed
wrapped that optimizer in its FP16_Optimizer, which saves them as one flat tensor a param group (`fp32_groups_flat`),
not one a parameter (FP16_UnfusedOptimizer's `fp32_groups`, which the export named by position). The export found
no masters it knew and widened the bf16 weights in silence: the fp32 export of a bf16 run was its bf16 weights."""
from types import SimpleNamespace

import pytest
import torch

from megadalle.train.checkpoint import CheckpointError
from megadalle.train.consolidate import checkpoint_tensors
from tests.unit.adam_net import CONFIG, model
from tests.unit.standin_apex import apex  # noqa: F401 - the fixture


@pytest.fixture
def saved(apex, monkeypatch, tmp_path):
    """The model-states file such a run saved (module weights in bf16, the optimizer's state beside them), its
    masters a little off the bf16 weights, as after training, flattened as FP16_Optimizer flattens them; returns the
    checkpoint folder, the net and the masters by name."""
    import deepspeed.comm
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
    from torch._utils import _flatten_dense_tensors

    from megadalle.train.engine import param_groups

    apex("ok")
    from apex.optimizers import FusedAdam

    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    net = model().to(torch.bfloat16)
    groups = param_groups(net, CONFIG.weight_decay)
    name_of = {id(p): name for name, p in net.named_parameters()}
    names = [[name_of[id(p)] for p in group["params"]] for group in groups]
    state = FP16_Optimizer(FusedAdam(groups, lr=CONFIG.lr), low_precision_dtype=torch.bfloat16).state_dict()
    torch.manual_seed(1)
    weights = dict(net.named_parameters())
    masters = {name: weights[name].detach().float() + 1e-3 * torch.randn(weights[name].shape)
               for group in names for name in group}
    state["fp32_groups_flat"] = [_flatten_dense_tensors([masters[name] for name in group]) for group in names]
    torch.save({"module": net.state_dict(), "optimizer": state}, tmp_path / "mp_rank_00_model_states.pt")
    return tmp_path, net, masters


def test_an_fp32_export_reads_the_flat_masters(saved):
    path, net, masters = saved
    exported = dict(checkpoint_tensors(None, net, path, dtype=torch.float32))
    assert exported.keys() == net.state_dict().keys() == masters.keys()
    for name, master in masters.items():
        assert exported[name].dtype == torch.float32 and torch.equal(exported[name], master), name
    assert any(not torch.equal(masters[name], net.state_dict()[name].float()) for name in masters)
    bf16 = dict(checkpoint_tensors(None, net, path, dtype=torch.bfloat16))  # the weights it trained, as saved
    assert all(torch.equal(bf16[name], weight) for name, weight in net.state_dict().items())


def test_flat_masters_that_do_not_fit_the_model_are_refused(saved):
    path, net, _ = saved
    states = torch.load(path / "mp_rank_00_model_states.pt", weights_only=True)
    states["optimizer"]["fp32_groups_flat"][0] = states["optimizer"]["fp32_groups_flat"][0][:-1]
    torch.save(states, path / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=r"flat fp32 groups hold \[191, 52\] values, the model.s parameter "
                                              r"groups \[192, 52\]"):
        list(checkpoint_tensors(None, net, path, dtype=torch.float32))


def test_a_pipeline_with_flat_masters_is_refused_naming_dtype_bf16(saved):
    """A pipeline's stage-0 masters are not mapped to its stages: its fp32 export is refused, as
    FP16_UnfusedOptimizer's masters were, not widened from the bf16 weights."""
    path, net, _ = saved
    for i, layer in enumerate(net):
        torch.save(layer.state_dict(), path / f"layer_{i:02d}-model_states.pt")
    task = SimpleNamespace(pipeline=lambda: SimpleNamespace(layer_names=[str(i) for i in range(len(net))]))
    with pytest.raises(CheckpointError, match="dtype=fp32 needs the fp32 masters of this bf16 pipeline at ZeRO stage "
                                              "0, which export does not read; export dtype=bf16"):
        list(checkpoint_tensors(task, net, path, dtype=torch.float32))
    assert dict(checkpoint_tensors(task, net, path, dtype=torch.bfloat16)).keys() == net.state_dict().keys()
