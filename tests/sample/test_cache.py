"""Cached decoding gives the logits of a full forward pass, for every mask kind, and sampling is seeded;
the sparse-aware decoder gives the model's cached logits and samples while reading only the keys each mask allows."""
import pytest
import torch

from megadalle.attention import MASK_KINDS, MaskSpec
from megadalle.attention.masks import allowed
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer
from megadalle.sampling.decoder import SparseDecoder, image_key_table
from megadalle.sampling.loop import SamplingSettings, batch_generator, sample_codes, sample_many
from tests.sample.tiny_transformer import tiny


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


@pytest.mark.parametrize("kind,last", [(kind, None) for kind in MASK_KINDS] + [("row", "conv")])
def test_decoder_logits_equal_the_models_cached_path(kind, last):
    model = tiny(kind, last)
    text = torch.randint(1, 40, (3, 6))
    text[0, 4:] = 0
    image = torch.randint(0, 24, (3, 16))
    cache = model.init_cache(3, "cpu", torch.float32)
    expected = [model.prefill(text, cache)] + [model.decode_step(image[:, i], cache) for i in range(15)]
    decoder = SparseDecoder(model, 3, "cpu", torch.float32)
    got = [decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(15)]
    torch.testing.assert_close(torch.stack(got, 1), torch.stack(expected, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_bf16_decoder_follows_the_fp32_full_forward(kind):
    """`generate dtype=bf16` (the default on GPUs): a bf16 model's cached steps stay bf16 and within bf16's
    rounding of the fp32 model's full forward (logits of order 1 here: 3% of the largest)."""
    model = tiny(kind, "conv")
    text = torch.randint(1, 40, (2, 6))
    image = torch.randint(0, 24, (2, 16))
    _, full = model(text, image)
    half = tiny(kind, "conv").bfloat16()
    half.load_state_dict(model.state_dict())
    decoder = SparseDecoder(half, 2, "cpu", torch.bfloat16)
    got = torch.stack([decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(15)], 1)
    assert got.dtype == torch.bfloat16
    assert (got.float() - full).abs().max() <= 0.03 * full.abs().max()


def test_decoder_restarts_cleanly_on_a_new_caption():
    model = tiny("row", "conv")
    text = torch.randint(1, 40, (2, 6))
    image = torch.randint(0, 24, (2, 16))
    decoder = SparseDecoder(model, 2, "cpu", torch.float32)
    first = [decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(15)]
    again = [decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(15)]
    torch.testing.assert_close(torch.stack(again), torch.stack(first), rtol=0, atol=0)


@pytest.mark.parametrize("settings", [SamplingSettings(), SamplingSettings(temperature=0.7, top_k=5, top_p=0.9)])
def test_same_samples_as_before_for_the_same_seed(settings):
    model = tiny("row", "conv")
    text = torch.randint(1, 40, (4, 6))
    before = sample_codes(model, text, settings, batch_generator(11, 0, "cpu"), sparse=False)
    now = sample_codes(model, text, settings, batch_generator(11, 0, "cpu"))
    assert torch.equal(now, before)


@pytest.mark.parametrize("kind,bound", [("row", 4 + 1), ("row_strict", 4), ("column", 4), ("conv", 3 * 2 + 2),
                                        ("dense", 16)])
def test_key_tables_hold_exactly_the_allowed_image_keys(kind, bound):
    spec = MaskSpec(kind, text_len=6, grid_h=4, grid_w=4, kernel=3)
    index, bias = image_key_table(spec, "cpu")
    assert index.shape[1] <= bound
    for i in range(16):
        keys = set(index[i][bias[i] == 0].tolist())
        want = {r for r in range(16) if allowed(spec, torch.tensor(6 + i), torch.tensor(6 + r))}
        assert keys == want
        assert set(index[i][bias[i] != 0].tolist()) <= {i}  # padding reads the query's own key only


def test_a_row_layer_reads_a_window_not_the_whole_image():
    spec = MaskSpec("row", text_len=256, grid_h=32, grid_w=32)
    index, _ = image_key_table(spec, "cpu")
    assert index.shape == (1024, 33)


@pytest.mark.gpu
def test_cuda_graph_steps_equal_eager_steps():
    model = tiny("row", "conv").cuda()
    text = torch.randint(1, 40, (2, 6), device="cuda")
    image = torch.randint(0, 24, (2, 16), device="cuda")
    cache = model.init_cache(2, "cuda", torch.float32)
    expected = [model.prefill(text, cache)] + [model.decode_step(image[:, i], cache) for i in range(15)]
    decoder = SparseDecoder(model, 2, "cuda", torch.float32)
    got = [decoder.prefill(text)] + [decoder.step(image[:, i]) for i in range(15)]
    assert decoder.graph is not None
    torch.testing.assert_close(torch.stack(got, 1), torch.stack(expected, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [
    dict(text_len=1, grid_size=1, image_vocab=1, attention_pattern=["row"]),
    dict(text_len=3, grid_size=5, attention_pattern=["conv", "row_strict", "dense", "column"], conv_kernel=7,
         conv_wrap=False, vocab_chunk=3),
    dict(text_len=4, grid_size=3, attention_pattern=["column", "conv"], last_layer_attention="row", conv_kernel=9,
         conv_wrap=True),
], ids=["one-text-one-image-token", "mixed-conv-wider-than-the-grid", "wrapped-conv-wider-than-the-grid"])
def test_decoder_at_the_edges_of_the_config_gives_the_full_forwards_logits(shape):
    """Shapes no other case reaches (a fuzz of the decoder against the full forward found them right): a grid of
    one token (no decoding step), a conv kernel wider than the grid, mixed patterns, vocabulary tables in pieces;
    each caption of a batch decoded as if alone. fp64, so any difference is the decoder's, not rounding."""
    cfg = TransformerConfig(**{"text_vocab": 40, "image_vocab": 24, "n_layers": 4, "n_heads": 2, "head_dim": 4,
                               "d_model": 8, "last_layer_attention": None, **shape})
    model = Transformer(cfg).double().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    text = torch.randint(1, 40, (3, cfg.text_len))
    text[0] = 0  # an empty caption: all pad
    image = torch.randint(0, cfg.image_vocab, (3, cfg.grid_len))
    _, full = model(text, image)

    def decoded(rows):
        decoder = SparseDecoder(model, len(rows), "cpu", torch.float64)
        steps = [decoder.prefill(text[rows])] + [decoder.step(image[rows, i]) for i in range(cfg.grid_len - 1)]
        return torch.stack(steps, 1)

    torch.testing.assert_close(decoded([0, 1, 2]), full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat([decoded([row]) for row in range(3)]), full, rtol=1e-10, atol=1e-10)
