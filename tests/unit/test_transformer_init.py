"""GPT-2's init, applied inside each module's own __init__ (so ZeRO-3's zero.Init keeps it)."""
import math

import pytest
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer


def test_every_parameter_gets_gpt2_init():
    torch.manual_seed(0)
    cfg = build(TransformerConfig, compose("train", ["model=tiny", "model.d_model=256", "model.head_dim=64"]).model,
                "model")
    residual = 0.02 / math.sqrt(2 * cfg.n_layers)
    for name, p in Transformer(cfg).named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.2.weight")):
            assert p.std().item() == pytest.approx(residual, rel=0.05), name
        elif name.startswith("embed.") or p.dim() == 2:
            assert p.std().item() == pytest.approx(0.02, rel=0.1), name
            assert abs(p.mean().item()) < 0.01, name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            assert name.endswith(("ln_attn.weight", "ln_mlp.weight", "ln.weight")) and torch.all(p == 1), name

