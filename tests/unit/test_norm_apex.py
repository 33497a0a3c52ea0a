"""models/norm.layer_norm: apex's FusedLayerNorm where it works on CUDA, else torch's LayerNorm with one warning
saying why (an apex built without its extensions, or for another GPU, crashed every verb that builds a Transformer)."""
import contextlib

import pytest
import torch
from torch import nn

from megadalle.models.norm import layer_norm, layer_norm_kind
from tests.unit.standin_apex import apex  # noqa: F401 - the fixture


def test_working_apex_is_used(apex, capsys):
    apex("ok")
    module = layer_norm(8)
    assert type(module).__name__ == "FusedLayerNorm"
    assert layer_norm_kind(nn.Sequential(module)) == "apex FusedLayerNorm"
    assert capsys.readouterr().err == ""


@contextlib.contextmanager
def partitioned_parameters():
    """As deepspeed.zero.Init leaves a module it builds: every parameter replaced by an empty shard."""
    handle = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: nn.Parameter(torch.empty(0)) if param is not None else None)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("context", [lambda: torch.device("meta"), partitioned_parameters],
                         ids=["meta", "zero_init"])
def test_first_call_in_a_build_context_still_finds_apex(apex, capsys, context):
    """Loading for generate/export builds on meta first, ZeRO-3 under zero.Init: the probe must not run there."""
    apex("ok")
    with context():
        first = layer_norm(8)
    assert type(first).__name__ == "FusedLayerNorm" and type(layer_norm(8)).__name__ == "FusedLayerNorm"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("extension, reason", [(None, "No module named 'fused_layer_norm_cuda'"),
                                               ("badcall", "no kernel image is available")])
def test_broken_apex_falls_back_with_one_warning(apex, capsys, extension, reason):
    apex(extension)
    modules = [layer_norm(8), layer_norm(16)]
    assert all(type(module) is nn.LayerNorm for module in modules)
    assert layer_norm_kind(nn.Sequential(*modules)) == "torch LayerNorm"
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and reason in err and "using torch's LayerNorm" in err


def test_kind_of_a_model_without_layer_norm_does_not_probe_apex(apex, capsys):
    """A dVAE run has no LayerNorm: a broken apex there is none of its business."""
    apex("badcall")
    assert layer_norm_kind(nn.Conv2d(3, 3, 1)) == "none"
    assert capsys.readouterr().err == ""
