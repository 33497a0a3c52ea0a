"""FLOPs of the Transformer, counted from its config (so `plan` works for models that don't fit in memory).

Counted as in the PaLM/nanoGPT MFU convention: 2 FLOPs per multiply-add of every matmul, the
backward twice the forward, activation recomputation not counted (it is overhead, not model
work). Attention counts only the key positions the layer's mask allows, which is what the
sparse kernel computes.
"""
from __future__ import annotations

from functools import lru_cache

from megadalle.attention.masks import MaskSpec, layer_kinds, shared_dense_mask
from megadalle.config.model import TransformerConfig


@lru_cache(maxsize=64)
def mean_keys_per_query(spec: MaskSpec) -> float:
    """Average number of keys a query attends to under `spec`."""
    return shared_dense_mask(spec).sum().item() / spec.seq_len


def forward_flops_per_token(cfg: TransformerConfig) -> float:
    d, s = cfg.d_model, cfg.seq_len
    dense_macs = cfg.n_layers * (4 + 2 * cfg.mlp_ratio) * d * d
    head_macs = d * ((cfg.text_len - 1) * cfg.text_vocab + cfg.grid_len * cfg.image_vocab) / s
    kinds = layer_kinds(cfg.n_layers, cfg.attention_pattern, cfg.last_layer_attention)
    keys = sum(mean_keys_per_query(MaskSpec(k, cfg.text_len, cfg.grid_size, cfg.grid_size, cfg.conv_kernel,
                                            cfg.conv_wrap)) for k in kinds)
    attention_macs = 2 * d * keys  # QK^T and PV, per layer, summed over layers through `keys`
    return 2 * (dense_macs + head_macs + attention_macs)


def transformer_flops_per_token(cfg: TransformerConfig) -> float:
    """Training FLOPs per token: forward + backward (2x forward)."""
    return 3 * forward_flops_per_token(cfg)
