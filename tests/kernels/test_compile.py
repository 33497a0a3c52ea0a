"""The kernel as a registered custom op: opcheck passes and torch.compile(fullgraph=True) traces the model.

On the CPU the compiled graph calls the op, whose real implementation runs the kernels under the
Triton interpreter, so the compiled model must give the eager losses and gradients.
"""
import dataclasses

import torch

from .helpers import layout_of, spec_of
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.kernels.op import TABLES
from megadalle.models.transformer import Transformer


def test_opcheck_forward_with_autograd():
    spec = spec_of("column", 8, 4, 5)
    layout = layout_of(spec, spec.seq_len)
    q, k, v = (torch.randn(1, 2, spec.seq_len, 16, requires_grad=True) for _ in range(3))
    args = (q, k, v, layout.order, *(getattr(layout, name) for name in TABLES), 16, 16, 0.25)
    torch.library.opcheck(torch.ops.megadalle.sparse_attention.default, args)


def _loss_and_grads(model, run, text, image):
    """Loss and parameter gradients of `run` (the model or its compiled wrapper, which shares its parameters)."""
    loss, _ = run(text, image)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_compiled_tiny_transformer_on_the_kernel_matches_eager():
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(cfg, attention_backend="triton"))
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, cfg.text_vocab, (1, cfg.text_len), generator=g)  # batch 1: the interpreter is slow
    image = torch.randint(0, cfg.image_vocab, (1, cfg.grid_len), generator=g)

    eager_loss, eager_grads = _loss_and_grads(model, model.loss, text, image)
    torch._dynamo.reset()
    # aot_eager: Dynamo and AOTAutograd trace the model and the op's fake and autograd registrations;
    # Inductor's CPU code generation would add nothing to what this proves (the op stays opaque).
    compiled = torch.compile(model.loss, fullgraph=True, backend="aot_eager")
    loss, grads = _loss_and_grads(model, compiled, text, image)
    torch.testing.assert_close(loss, eager_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
