"""models/norm.layer_norm: apex's FusedLayerNorm where it works on CUDA, else torch's LayerNorm with one warning
saying why (an apex built without its extensions, or for another GPU, crashed every verb that builds a Transformer)."""
import pytest
from torch import nn

from megadalle.models.norm import layer_norm, layer_norm_kind
from tests.unit.standin_apex import apex  # noqa: F401 - the fixture


def test_working_apex_is_used(apex, capsys):
    apex("ok")
    module = layer_norm(8)
    assert type(module).__name__ == "FusedLayerNorm"
    assert layer_norm_kind(nn.Sequential(module)) == "apex FusedLayerNorm"
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


def test_kind_of_a_model_without_layer_norm():
    assert layer_norm_kind(nn.Linear(2, 2)) == "none"
