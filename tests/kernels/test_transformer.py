"""The tiny Transformer gives the same loss and gradients through the kernel as through the reference."""
import dataclasses

import pytest
import torch

from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.models.transformer import Transformer


def _loss_and_grads(cfg: TransformerConfig, backend: str, text, image):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(cfg, attention_backend=backend))
    loss, _ = model.loss(text, image)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_tiny_transformer_triton_matches_reference():
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, cfg.text_vocab, (2, cfg.text_len), generator=g)
    text[:, -4:] = cfg.text_pad_id
    image = torch.randint(0, cfg.image_vocab, (2, cfg.grid_len), generator=g)
    assert {"row", "column", "conv"} <= {block.attn.spec.kind for block in Transformer(cfg).blocks}

    ref_loss, ref_grads = _loss_and_grads(cfg, "reference", text, image)
    loss, grads = _loss_and_grads(cfg, "triton", text, image)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_tiny_transformer_on_cuda_auto_matches_reference(dtype):
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    text = torch.randint(1, cfg.text_vocab, (2, cfg.text_len), device="cuda")
    image = torch.randint(0, cfg.image_vocab, (2, cfg.grid_len), device="cuda")
    losses = []
    for backend in ("reference", "auto"):
        torch.manual_seed(0)
        model = Transformer(dataclasses.replace(cfg, attention_backend=backend)).to("cuda", dtype)
        losses.append(model.loss(text, image)[0].float())
    torch.testing.assert_close(losses[1], losses[0], atol=2e-2 if dtype == torch.bfloat16 else 1e-4, rtol=1e-2)
