"""A tiny random Transformer of one mask kind (and another in its last layer), its weights drawn N(0, 0.3).

A helper, not a test module: the cached decoding's tests, the sampler's memory check and the settings that reach
each draw sample from the same model, and none of those test modules should be another's library.
"""
import torch

from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer


def tiny(kind: str, last: str | None = None) -> Transformer:
    cfg = TransformerConfig(text_len=6, text_vocab=40, grid_size=4, image_vocab=24, n_layers=2, n_heads=2,
                            head_dim=8, d_model=16, attention_pattern=[kind], last_layer_attention=last,
                            conv_kernel=3)
    model = Transformer(cfg).eval()
    for p in model.parameters():  # the zero-initialised embeddings would hide position mix-ups
        torch.nn.init.normal_(p, std=0.3)
    return model
