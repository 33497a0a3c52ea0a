"""Cached decoding gives the logits of a full forward pass, for every mask kind, and sampling is seeded."""
import pytest
import torch

from megadalle.attention import MASK_KINDS
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.sampling.loop import SamplingSettings, sample_codes, sample_many


def tiny(kind: str, last: str | None = None) -> Transformer:
    cfg = TransformerConfig(text_len=6, text_vocab=40, grid_size=4, image_vocab=24, n_layers=2, n_heads=2,
                            head_dim=8, d_model=16, attention_pattern=[kind], last_layer_attention=last,
                            conv_kernel=3)
    model = Transformer(cfg).eval()
    for p in model.parameters():  # the zero-initialised embeddings would hide position mix-ups
        torch.nn.init.normal_(p, std=0.3)
    return model


@pytest.mark.parametrize("kind,last", [(kind, None) for kind in MASK_KINDS] + [("row", "conv")])
def test_cached_logits_equal_full_forward(kind, last):
    model = tiny(kind, last)
    text = torch.randint(1, 40, (3, 6))
    text[0, 4:] = 0
    image = torch.randint(0, 24, (3, 16))
    _, full = model(text, image)
    cache = model.init_cache(3, "cpu", torch.float32)
    steps = [model.prefill(text, cache)] + [model.decode_step(image[:, i], cache) for i in range(15)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_sampling_is_seeded_and_reproducible():
    model = tiny("row", "conv")
    text = torch.randint(1, 40, (6,))
    settings = SamplingSettings(temperature=1.0, top_k=8)
    a = sample_many(model, text, n=5, batch_size=2, settings=settings, seed=3)
    b = sample_many(model, text, n=5, batch_size=2, settings=settings, seed=3)
    c = sample_many(model, text, n=5, batch_size=2, settings=settings, seed=4)
    assert a.shape == (5, 16) and a.min() >= 0 and a.max() < 24
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_sampling_follows_the_full_forward_argmax():
    model = tiny("column", "conv")
    text = torch.randint(1, 40, (2, 6))
    codes = sample_codes(model, text, SamplingSettings(top_k=1))
    _, full = model(text, codes)
    assert torch.equal(full.argmax(-1), codes)
