"""`attend` routes to the kernel or the reference and both give the same answer for every mask."""
import subprocess
import sys

import pytest
import torch

from .helpers import KINDS, spec_of
from megadalle.attention import dispatch
from megadalle.attention.dispatch import attend, reference_attention
from megadalle.attention.masks import allowed, dense_mask
from megadalle.flops import mean_keys_per_query


@pytest.mark.parametrize("kind", KINDS)
def test_triton_backend_matches_reference(kind):
    spec = spec_of(kind, 8, 4, 5)
    q, k, v = (torch.randn(2, 2, spec.seq_len, 16) for _ in range(3))
    torch.testing.assert_close(attend(q, k, v, spec, backend="triton"), reference_attention(q, k, v, spec),
                               atol=2e-5, rtol=2e-5)


def test_auto_takes_the_reference_off_cuda(monkeypatch):
    def refuse(*args):
        raise AssertionError("auto must not take the kernel on a CPU")

    monkeypatch.setattr(dispatch, "kernel_attention", refuse)
    spec = spec_of("column", 4, 3, 3)
    q, k, v = (torch.randn(1, 1, spec.seq_len, 16) for _ in range(3))
    assert torch.equal(attend(q, k, v, spec), reference_attention(q, k, v, spec))


def test_decoding_steps_take_the_reference_path_with_any_backend():
    spec = spec_of("row", 4, 3, 3)
    q, k, v = (torch.randn(1, 2, spec.seq_len, 16) for _ in range(3))
    full = reference_attention(q, k, v, spec)
    step = attend(q[:, :, 7:9], k[:, :, :9], v[:, :, :9], spec, backend="triton", query_offset=7)
    torch.testing.assert_close(step, full[:, :, 7:9])


def test_layouts_are_cached_per_spec_length_and_device():
    spec = spec_of("conv", 4, 3, 3)
    first = dispatch.kernel_layout(spec, spec.seq_len, 16, "cpu")
    assert dispatch.kernel_layout(spec, spec.seq_len, 16, "cpu") is first
    assert dispatch.kernel_layout(spec, spec.seq_len - 1, 16, "cpu").seq_len == spec.seq_len - 1


def test_a_callers_edit_of_dense_mask_changes_no_later_mask():
    """dense_mask hands out copies: editing one must not reach the reference path's (or FLOPs') cached mask."""
    spec = spec_of("row", 4, 3, 3)
    q, k, v = (torch.randn(1, 2, spec.seq_len, 16) for _ in range(3))
    before = attend(q, k, v, spec, backend="reference")
    mask = dense_mask(spec)
    mask &= torch.eye(spec.seq_len, dtype=torch.bool)
    idx = torch.arange(spec.seq_len)
    assert torch.equal(dense_mask(spec), allowed(spec, idx[:, None], idx[None, :]))
    assert torch.equal(attend(q, k, v, spec, backend="reference"), before)
    assert mean_keys_per_query(spec) == allowed(spec, idx[:, None], idx[None, :]).sum().item() / spec.seq_len


def test_the_masks_import_without_the_dispatch_nor_torch_dynamo():
    """The configs import the masks through megadalle.attention, whose __init__ imported the dispatch, and with it
    torch._dynamo and triton (seconds for `megadalle <verb> --help`); `attend` is still there on first use."""
    code = ("import sys; import megadalle.config.model; from megadalle.attention import MaskSpec; "
            "print(sorted({'megadalle.attention.dispatch', 'torch._dynamo', 'triton'} & set(sys.modules))); "
            "from megadalle.attention import attend; print(attend.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["[]", "megadalle.attention.dispatch"]


def test_the_transformer_and_its_decoder_import_without_torch_dynamo():
    """torch._dynamo takes 1.6 s to import: every start of generate, evaluate or export paid it for a decorator."""
    code = ("import sys; import megadalle.models.transformer, megadalle.sampling.decoder; "
            "print(sorted({'torch._dynamo', 'triton'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["[]"]
