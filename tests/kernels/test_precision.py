"""`tiles.precision`: how the kernels multiply tiles of each dtype. fp32 follows torch's matmul setting (exact by
default, TF32 only once torch allows it); half types are widened to fp32 only under Triton's CPU interpreter."""
import pytest
import torch

from megadalle.kernels.tiles import precision


@pytest.fixture
def matmul_precision():
    """Set torch's fp32 matmul precision for one test (a process-wide setting), restoring it after."""
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("setting, expected", [("highest", "ieee"), ("high", "tf32")])
def test_fp32_tiles_use_tf32_only_where_torch_allows_it(matmul_precision, setting, expected):
    """torch's default "highest" multiplies fp32 exactly: so do the kernels; "high" lets both use TF32."""
    matmul_precision(setting)
    assert precision(torch.float32) == expected


@pytest.fixture
def cuda_matmul_setting():
    """Set torch >= 2.9's CUDA fp32 matmul setting for one test, restoring both of its levels after."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision, torch.backends.fp32_precision
    yield lambda setting: setattr(matmul, "fp32_precision", setting)
    matmul.fp32_precision, torch.backends.fp32_precision = before


@pytest.mark.parametrize("setting, expected", [("tf32", "tf32"), ("ieee", "ieee")])
def test_fp32_tiles_follow_torchs_new_matmul_setting(cuda_matmul_setting, setting, expected):
    """Set the way torch's docs now recommend, after which torch's legacy getter raises (mixing the two APIs):
    every fp32 kernel call failed with that error."""
    cuda_matmul_setting(setting)
    assert precision(torch.float32) == expected


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interpret, expected", [("1", "upcast"), (None, "tf32")])
def test_half_tiles_are_widened_under_the_interpreter_only(monkeypatch, matmul_precision, dtype, interpret,
                                                           expected):
    """The interpreter would multiply bf16 bits as integers, so it gets fp32 tiles; a GPU multiplies half tiles
    natively, whatever torch's fp32 setting."""
    matmul_precision("highest")
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    assert precision(dtype) == expected
