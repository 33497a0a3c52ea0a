"""megadalle.sampling.memory: the decoder's bytes as allocated, and a refusal that names the batch that fits."""
import pytest
import torch

from megadalle.sampling.decoder import SparseDecoder
from megadalle.sampling.memory import BatchTooLarge, check_batch_fits, check_device_fits, decoder_bytes
from tests.sample.tiny_transformer import tiny


def allocated(decoder: SparseDecoder) -> int:
    """Bytes of every storage behind the decoder's cache and windows, each counted once."""
    tensors = [t for layer in decoder.cache.layers for t in (layer.k, layer.v)]
    tensors += [t for window in decoder.windows for t in window]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["row", "column", "conv"])
def test_decoder_bytes_are_what_the_decoder_allocates(kind, dtype):
    model = tiny(kind, "conv")
    assert decoder_bytes(model.cfg, 3, dtype) == allocated(SparseDecoder(model, 3, "cpu", dtype))


def test_a_batch_that_cannot_fit_is_refused_with_the_one_that_does():
    model = tiny("row", "conv")
    one = decoder_bytes(model.cfg, 1, torch.float32)
    check_batch_fits(model.cfg, 8, torch.float32, 8 * one, "cuda:0")  # exactly enough: let through
    with pytest.raises(BatchTooLarge, match=r"batch_size=8: .* cuda:0 has .* free; batch_size=4 fits "
                                            r"\(or dtype=bf16, half the cache\)"):
        check_batch_fits(model.cfg, 8, torch.float32, 5 * one, "cuda:0")
    with pytest.raises(BatchTooLarge, match="not even one sample fits"):
        check_batch_fits(model.cfg, 2, torch.bfloat16, one // 4, "cuda:0")


def test_the_cpu_is_not_checked():
    check_device_fits(tiny("row"), 10**6)
