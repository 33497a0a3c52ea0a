"""megadalle.devices: which device and Transformer dtype `generate` and `evaluate` pick."""
import pytest
import torch

from megadalle import devices
from megadalle.devices import pick_device, pick_dtype


def test_auto_is_fp32_on_the_cpu_and_names_are_obeyed():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("bf16", cpu) == torch.bfloat16 and pick_dtype("fp32", cpu) == torch.float32
    with pytest.raises(ValueError, match="dtype='fp16': expected one of auto, fp32, bf16"):
        pick_dtype("fp16", cpu)


@pytest.mark.parametrize("has_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_a_gpu_is_bf16_where_it_has_it(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(devices.torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    assert pick_dtype("auto", torch.device("cuda", 0)) == expected


def test_auto_device_follows_cuda(monkeypatch):
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
