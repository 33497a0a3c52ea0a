"""The dVAE's shapes and structure: the paper's 256 px -> 32x32 codes, encode/decode, the code embedding."""
import pytest
import torch
import torch.nn.functional as F

from megadalle.config.dvae import DVAEConfig
from megadalle.models.dvae import DVAE, Bottleneck, flops_per_image

TINY = DVAEConfig(image_size=32, n_hid=16, n_blk_per_group=1, n_groups=3, vocab_size=64, n_init=16)


def test_paper_config_gives_32x32_codes_over_8192_on_meta():
    cfg = DVAEConfig()
    with torch.device("meta"):
        model = DVAE(cfg)
        logits = model.logits(torch.empty(2, 3, 256, 256))
        stats = model.decoder(torch.empty(2, 8192, 32, 32))
    assert cfg.grid_size == 32
    assert logits.shape == (2, 8192, 32, 32) and logits.dtype == torch.float32
    assert stats.shape == (2, 6, 256, 256)
    n_params = sum(p.numel() for p in model.parameters())
    assert 90e6 < n_params < 110e6  # OpenAI's released dVAE has ~98M
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(b.post_gain == 1 / 64 for b in blocks)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.encoder.modules()) == 3
    assert sum(isinstance(m, torch.nn.Upsample) for m in model.decoder.modules()) == 3
    assert 4e11 < flops_per_image(cfg) < 8e11
    assert DVAE(TINY).flops_per_image() == flops_per_image(TINY) > 0


def test_encode_then_decode_shapes_and_range():
    model = DVAE(TINY).eval()
    images = torch.rand(3, 3, 32, 32)
    codes = model.encode(images)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 64
    out = model.decode_codes(codes.to(torch.int32))
    assert out.shape == (3, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_decode_codes_is_the_decoder_on_one_hot_codes():
    model = DVAE(TINY).eval()
    codes = torch.randint(0, 64, (2, 8, 8))
    one_hot = F.one_hot(codes, 64).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(model.decode_codes(codes), model.stats_to_images(model.decoder(one_hot)))


def test_forward_gives_logits_and_six_channel_stats_with_gradients():
    model = DVAE(TINY)
    logits, stats = model(torch.rand(2, 3, 32, 32), tau=0.5)
    assert logits.shape == (2, 64, 8, 8) and stats.shape == (2, 6, 32, 32)
    stats.sum().backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # gradients reach the encoder through the relaxation


@pytest.mark.parametrize("channels_last", [False, True])
def test_in_bf16_the_code_logits_and_the_code_embedding_are_computed_in_fp32(channels_last):
    """DeepSpeed's bf16 casts the whole dVAE; the paper and OpenAI's dVAE keep these two convolutions in fp32.
    A bf16 logit conv moved the argmax code of ~3% of cells at the paper's width."""
    from dataclasses import replace

    model = DVAE(replace(TINY, channels_last=channels_last)).to(torch.bfloat16)
    seen = {}
    last = model.encoder.net[-1]
    last.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    logits, stats = model(torch.rand(2, 3, 32, 32, dtype=torch.bfloat16), tau=0.5)
    assert logits.dtype == torch.float32 and stats.dtype == torch.bfloat16
    exact = F.conv2d(seen["x"].float(), last.weight.float(), last.bias.float())
    torch.testing.assert_close(logits, exact, rtol=1e-6, atol=1e-6)
    z = torch.softmax(torch.randn(2, 64, 8, 8), dim=1)
    embedding = model.decoder.embedding
    torch.testing.assert_close(model.decoder.net(F.conv2d(z, embedding.weight.float(), embedding.bias.float())
                                                 .to(torch.bfloat16)), model.decoder(z))


def test_decode_codes_rejects_out_of_range_codes():
    model = DVAE(TINY)
    with pytest.raises(ValueError, match="max 64"):
        model.decode_codes(torch.full((1, 8, 8), 64))


def block_widths(part: torch.nn.Module) -> list[int]:
    """Output channels of each bottleneck block of the encoder or decoder, in order."""
    return [b.res[-1].out_channels for b in part.modules() if isinstance(b, Bottleneck)]


def test_decoder_min_width_floors_only_the_narrow_decoder_groups_and_survives_save_and_load(tmp_path):
    from dataclasses import asdict, replace

    from megadalle.models.dvae import load_dvae
    from megadalle.weights import save_weights

    assert block_widths(DVAE(TINY).decoder) == [64, 32, 16]
    floored = replace(TINY, decoder_min_width=32)
    model = DVAE(floored)
    assert block_widths(model.decoder) == [64, 32, 32]
    assert block_widths(model.encoder) == [16, 32, 64]
    assert model.decode_codes(torch.randint(0, 64, (2, 8, 8))).shape == (2, 3, 32, 32)
    save_weights(tmp_path / "dvae.safetensors", model.state_dict(), "dvae", asdict(floored))
    assert block_widths(load_dvae(tmp_path / "dvae.safetensors").decoder) == [64, 32, 32]


@pytest.mark.parametrize("value", [-4, 30])
def test_decoder_min_width_refuses_values_the_bottleneck_cannot_split(value):
    from dataclasses import replace

    from megadalle.config import ConfigError

    with pytest.raises(ConfigError, match=f"dvae.decoder_min_width={value}: must be 0"):
        replace(TINY, decoder_min_width=value).validate()


def test_channels_last_is_a_layout_same_outputs_and_gradients_with_contiguous_parameters():
    """The NHWC path must compute the NCHW model (same weights in, same logits, stats and gradients out) while
    every parameter stays contiguous (DeepSpeed broadcasts and flattens them) and the outputs are contiguous."""
    from dataclasses import replace

    torch.manual_seed(0)
    nchw = DVAE(replace(TINY, channels_last=False))
    nhwc = DVAE(replace(TINY, channels_last=True))
    nhwc.load_state_dict(nchw.state_dict())
    images = torch.rand(3, 3, 32, 32)
    outputs = []
    for model in (nchw, nhwc):
        torch.manual_seed(1)
        logits, stats = model(images, tau=0.5)
        (stats.square().mean() + logits.square().mean()).backward()
        outputs.append((logits, stats, {n: p.grad for n, p in model.named_parameters()}))
    (logits_a, stats_a, grads_a), (logits_b, stats_b, grads_b) = outputs
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats_b, stats_a, rtol=1e-5, atol=1e-5)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.is_contiguous() and p.grad.is_contiguous() for p in nhwc.parameters())
    assert logits_b.is_contiguous() and stats_b.is_contiguous()
    codes = torch.randint(0, 64, (2, 8, 8))
    torch.testing.assert_close(nhwc.decode_codes(codes), nchw.decode_codes(codes), rtol=1e-5, atol=1e-5)
    assert nhwc.decode_codes(codes).is_contiguous()


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_convolutions_run_in_the_configured_layout(channels_last):
    from dataclasses import replace

    from megadalle.models.dvae import Conv

    model = DVAE(replace(TINY, channels_last=channels_last))
    outputs = []  # every conv's output has channels and space (> 1 each), so the two layouts differ
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out)) for m in model.modules() if isinstance(m, Conv)]
    model(torch.rand(2, 3, 32, 32), tau=1.0)
    for h in hooks:
        h.remove()
    assert len(outputs) == len(hooks) and all(out.shape[1] > 1 and out.shape[-1] > 1 for out in outputs)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(out.is_contiguous(memory_format=layout) and not out.is_contiguous(memory_format=other)
               for out in outputs for other in {torch.channels_last, torch.contiguous_format} - {layout})
