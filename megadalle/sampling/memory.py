"""What a batch of samples holds on the device, and a refusal before it runs out.

A decoder (megadalle.sampling.decoder) keeps each layer's keys and values for all 1,280 positions
plus the image keys the layer may read, gathered beside them: at the 12B in bf16 1.33 GB per sample
beside 24.6 GB of weights, so `generate`'s batch of 32 needs 43 GB more and does not fit beside the
weights on a 40 or 48 GB GPU. Torch would say so at the first batch's
allocation with a message that names neither the batch size nor what would fit; this says both.
"""
from __future__ import annotations

import torch

from megadalle.config.model import TransformerConfig
from megadalle.errors import UserError
from megadalle.models.transformer import mask_specs
from megadalle.sampling.decoder import image_key_table

SUGGESTED_SHARE = 0.9
"""Share of the free memory the suggested batch's cache may take: the prefill's activations and the CUDA
graph's pool need some of the rest."""


class BatchTooLarge(UserError, MemoryError):
    """A batch whose cache would not fit; the message names batch_size and the largest that fits."""


def decoder_bytes(cfg: TransformerConfig, batch: int, dtype: torch.dtype) -> int:
    """Bytes of one decoder's cache and windows for `batch` samples in `dtype` (what SparseDecoder allocates)."""
    per_position = 2 * batch * cfg.n_heads * cfg.head_dim * torch.finfo(dtype).bits // 8  # keys and values
    specs = mask_specs(cfg)
    gathered = sum(image_key_table(spec, "cpu")[0].shape[1] for spec in specs)
    return per_position * (len(specs) * cfg.seq_len + gathered)


def check_batch_fits(cfg: TransformerConfig, batch: int, dtype: torch.dtype, free_bytes: int, device: str) -> None:
    """Refuse a batch whose decoder alone needs more than `free_bytes` (it cannot run), naming a batch that fits
    with room to spare. A batch that only just fits is let through: refusing what might run would be worse."""
    need = decoder_bytes(cfg, batch, dtype)
    if need <= free_bytes:
        return
    fits = int(SUGGESTED_SHARE * free_bytes // decoder_bytes(cfg, 1, dtype))
    advice = f"batch_size={fits} fits" if fits else "not even one sample fits: free memory or use a larger device"
    smaller = " (or dtype=bf16, half the cache)" if dtype == torch.float32 else ""
    raise BatchTooLarge(f"batch_size={batch}: the sampling cache needs {need / 2**30:.1f} GiB and {device} has "
                        f"{free_bytes / 2**30:.1f} GiB free; {advice}{smaller}")


def check_device_fits(model, batch: int) -> None:
    """`check_batch_fits` for `model` (a Transformer) in its own dtype against what its CUDA device has free now;
    the CPU's memory is not checked (it pages and overcommits, so a figure of free memory there says little)."""
    weight = next(model.parameters())
    if weight.device.type == "cuda":
        check_batch_fits(model.cfg, batch, weight.dtype, torch.cuda.mem_get_info(weight.device)[0], str(weight.device))
