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
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(devices.DeviceError, match="device=cuda: this machine has no CUDA GPU .* device=cpu"):
        pick_device("cuda")
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda") and pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(devices.DeviceError, match="device=cuda:2: this machine has 2 CUDA GPU"):
        pick_device("cuda:2")
    with pytest.raises(devices.DeviceError, match="device='bogus'"):
        pick_device("bogus")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_asked_for_where_there_is_none_is_one_line(tmp_path, capsys):
    from megadalle.cli import main

    from tests.tiny_models import write_tiny_models

    write_tiny_models(tmp_path)
    assert main(["generate", f"weights={tmp_path / 'model.safetensors'}", "prompt=a red circle", "n=1", "keep=1",
                 "device=cuda", f"output={tmp_path / 'out'}"]) == 2
    assert "device=cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    import megadalle

    with pytest.raises(devices.DeviceError):
        megadalle.load_pipeline(tmp_path, "cuda")
