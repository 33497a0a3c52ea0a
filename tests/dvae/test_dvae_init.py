"""Every dVAE convolution starts as OpenAI's released dVAE does: weights N(0, 1 / (in_channels * k * k)), bias 0.

The fan-in is the whole receptive field (input channels times the k x k window), which keeps activations at unit
scale through the stack, so the encoder's logits vary with the image from the start rather than drown in the
Gumbel noise (models/dvae.py `conv`). A fan-in of in_channels * k left every 3x3 layer sqrt(3) and the 7x7 stem
sqrt(7) too wide, activations growing layer by layer; nothing but this test looks at the init's scale.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae import DVAE

CFG = DVAEConfig(image_size=32, n_hid=32, n_blk_per_group=1, n_groups=3, vocab_size=256, n_init=32)
ESTIMABLE = 2048
"""Weights this large estimate their std within ~1.6% (1 / sqrt(2n)), so 10% is over 6 standard errors."""


def test_every_conv_draws_its_weights_over_the_whole_fan_in_and_zero_bias():
    torch.manual_seed(0)
    convs = {name: m for name, m in DVAE(CFG).named_modules() if isinstance(m, nn.Conv2d)}
    checked = set()
    for name, layer in convs.items():
        n_out, n_in, kh, kw = layer.weight.shape
        assert torch.all(layer.bias == 0), name
        if layer.weight.numel() >= ESTIMABLE:
            std = 1 / math.sqrt(n_in * kh * kw)
            assert layer.weight.std().item() == pytest.approx(std, rel=0.1), f"{name} {tuple(layer.weight.shape)}"
            assert abs(layer.weight.mean().item()) < 0.1 * std, name
            checked.add(kh)
    assert checked == {1, 3, 7}, f"kernel sizes checked: {sorted(checked)} of {len(convs)} convolutions"
