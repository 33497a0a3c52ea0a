"""The Transformer: shapes, gradients, causality under every mask, pads, KV cache, checkpointing."""
import pytest
import torch

from megadalle.attention.masks import MASK_KINDS, MaskSpec, dense_mask
from megadalle.models.transformer import Transformer, segment_loss

from .helpers import random_batch, tiny_config


def position_logits(model, text, image):
    """Logits of every predicting position, in sequence order, as one list of [B, V] tensors."""
    text_logits, image_logits = model(text, image)
    return [text_logits[:, i] for i in range(text_logits.shape[1])] + [image_logits[:, i] for i in range(image_logits.shape[1])]


def test_forward_and_backward_shapes_and_every_parameter_learns():
    cfg = tiny_config()
    model = Transformer(cfg)
    text, image = random_batch(cfg)
    text_logits, image_logits = model(text, image)
    assert text_logits.shape == (2, cfg.text_len - 1, cfg.text_vocab)
    assert image_logits.shape == (2, cfg.grid_len, cfg.image_vocab)
    loss, parts = model.loss(text, image)
    loss.backward()
    expected = cfg.text_loss_weight * parts["text_loss"] + cfg.image_loss_weight * parts["image_loss"]
    assert torch.allclose(loss.detach(), expected)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_loss_starts_near_uniform():
    cfg = tiny_config()
    _, parts = Transformer(cfg).loss(*random_batch(cfg))
    assert abs(parts["image_loss"].item() - torch.log(torch.tensor(cfg.image_vocab * 1.0)).item()) < 0.3


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_causality_under_every_mask(kind):
    """Changing token j never changes the logits of positions before j."""
    cfg = tiny_config(attention_pattern=[kind], last_layer_attention=None)
    model = Transformer(cfg).eval()
    text, image = random_batch(cfg, caption_len=cfg.text_len)
    before = position_logits(model, text, image)
    for j in (3, cfg.text_len - 1, cfg.text_len, cfg.text_len + 9, cfg.seq_len - 1):
        t2, i2 = text.clone(), image.clone()
        if j < cfg.text_len:
            t2[:, j] = (t2[:, j] % (cfg.text_vocab - 1)) + 1
        else:
            i2[:, j - cfg.text_len] = (i2[:, j - cfg.text_len] + 1) % cfg.image_vocab
        after = position_logits(model, t2, i2)
        for pos in range(j):
            assert torch.allclose(before[pos], after[pos], atol=1e-5), (kind, j, pos)
        if j < cfg.seq_len - 1:
            assert not torch.allclose(before[j], after[j], atol=1e-5), "the changed token must matter to its own position"


@pytest.mark.parametrize("kind", ["row", "column", "conv"])
def test_one_layer_sees_only_what_its_mask_allows(kind):
    cfg = tiny_config(attention_pattern=[kind], last_layer_attention=None, n_layers=1)
    model = Transformer(cfg).eval()
    text, image = random_batch(cfg)
    spec = MaskSpec(kind, cfg.text_len, cfg.grid_size, cfg.grid_size, cfg.conv_kernel, cfg.conv_wrap)
    mask = dense_mask(spec)
    query = cfg.seq_len - 2
    base = model(text, image)[1][:, query - cfg.text_len + 1]
    for key in range(cfg.text_len, query):
        i2 = image.clone()
        i2[:, key - cfg.text_len] = (i2[:, key - cfg.text_len] + 1) % cfg.image_vocab
        changed = not torch.allclose(base, model(text, i2)[1][:, query - cfg.text_len + 1], atol=1e-6)
        assert changed == bool(mask[query, key]), (kind, key)


def test_pads_at_different_positions_get_different_embeddings():
    cfg = tiny_config()
    model = Transformer(cfg)
    text = torch.full((1, cfg.text_len), cfg.text_pad_id)
    emb = model.embed.text(text)[0]
    assert not torch.allclose(emb[3], emb[7])
    assert torch.equal(emb[5], model.embed.pad[5])
    text[0, 5] = 7
    assert not torch.equal(model.embed.text(text)[0, 5], model.embed.pad[5])


def test_pad_targets_are_not_scored():
    cfg = tiny_config()
    model = Transformer(cfg)
    text, image = random_batch(cfg, caption_len=4)
    text_logits, image_logits = model(text, image)
    scrambled = text_logits.clone()
    scrambled[:, 4:] = torch.randn_like(scrambled[:, 4:]) * 10
    assert torch.allclose(segment_loss(cfg, text_logits, image_logits, text, image)[0],
                          segment_loss(cfg, scrambled, image_logits, text, image)[0])


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_kv_cache_matches_full_forward(kind):
    cfg = tiny_config(attention_pattern=[kind], last_layer_attention="conv", n_layers=2)
    model = Transformer(cfg).eval()
    text, image = random_batch(cfg)
    full = model(text, image)[1]
    cache = model.init_cache(2, "cpu", torch.float32)
    steps = [model.prefill(text, cache)] + [model.decode_step(image[:, j], cache) for j in range(cfg.grid_len - 1)]
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="no image token left to predict"):
        model.decode_step(image[:, -1], cache)


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = tiny_config()
    text, image = random_batch(cfg)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = Transformer(tiny_config(activation_checkpointing=ckpt))
        model.loss(text, image)[0].backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_shapes_name_the_shape():
    cfg = tiny_config()
    model = Transformer(cfg)
    text, image = random_batch(cfg)
    with pytest.raises(ValueError, match=r"text must be \[batch, 16\], got \[2, 15\]"):
        model(text[:, :-1], image)
    with pytest.raises(ValueError, match=r"image must be \[batch, 64\]"):
        model(text, image[:, :10])


def test_flops_per_token_counts_the_dense_part():
    cfg = tiny_config()
    model = Transformer(cfg)
    blocks = sum(p.numel() for n, p in model.blocks.named_parameters() if p.dim() == 2)
    assert model.flops_per_token() > 6 * blocks
    assert model.flops_per_token() < 6 * sum(p.numel() for p in model.parameters()) + 12 * cfg.n_layers * cfg.d_model * cfg.seq_len
