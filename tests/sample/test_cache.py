"""Cached decoding gives the logits of a full forward pass, for every mask kind, and sampling is seeded;
the sparse-aware decoder gives the model's cached logits and samples while reading only the keys each mask allows."""
import pytest
import torch

from megadalle.attention import MASK_KINDS, MaskSpec
from megadalle.attention.masks import allowed
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
